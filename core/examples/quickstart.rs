// A registry, two peers, a chat and a verified download, all in one process.
// `cargo run -p p2pcore --example quickstart`; the README shows this file.
use p2pcore::{peer::Peer, registry::Registry};
use std::sync::mpsc;
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A registry on a free loopback port (`p2pchat server` runs the same one).
    let registry = Registry::bind("127.0.0.1:0")?;
    let addr = registry.local_addr().to_string();

    // A shared directory each; bob shares report.bin.
    let base = std::env::temp_dir().join(format!("p2pcore-quickstart-{}", std::process::id()));
    let (alice_dir, bob_dir) = (base.join("alice"), base.join("bob"));
    std::fs::create_dir_all(&alice_dir)?;
    std::fs::create_dir_all(&bob_dir)?;
    std::fs::write(bob_dir.join("report.bin"), vec![7u8; 100_000])?;

    // Hooks run on library threads: keep them short (accept, send on a channel).
    let (heard_tx, heard) = mpsc::channel();
    let bob = Peer::builder(&addr, "bob", &bob_dir)
        .on_chat_request(|request| {
            let _ = request.accept();
        })
        .on_chat_message(move |_chat, from, text| {
            let _ = heard_tx.send(format!("{from}: {text}"));
        })
        .connect()?;
    let alice = Peer::builder(&addr, "alice", &alice_dir).connect()?;

    println!("online: {:?}", alice.users()?); // ["alice", "bob"]
    println!("bob shares: {:?}", alice.files_of("bob")?); // ["report.bin"]

    let chat = alice.chat("bob")?; // blocks until bob's hook accepts
    chat.send("hello bob")?;
    println!("bob got {:?}", heard.recv_timeout(Duration::from_secs(10))?);
    chat.close();

    let download = alice.fetch("bob", "report.bin")?; // runs in the background
    let path = download.wait()?; // hash verified, then renamed into place
    println!("saved {}", path.display());

    // Every library thread is joined here (and on drop).
    alice.exit();
    bob.exit();
    registry.shutdown();
    std::fs::remove_dir_all(&base)?;
    Ok(())
}
