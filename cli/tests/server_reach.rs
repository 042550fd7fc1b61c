//! `p2pchat server` shows the outcome of each reachability check live: a real
//! `p2pchat share` registers over an encrypted session, the registry dials its
//! listener back, and the server's log says what came of it (text and JSON).

mod common;

use common::*;

fn listening_addr(p: &mut Proc) -> String {
    let first = p.line();
    if first.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(&first).expect("first line is JSON");
        return v["addr"].as_str().expect("listening addr").to_string();
    }
    first
        .strip_prefix("registry listening on ")
        .unwrap_or_else(|| panic!("first line: {first:?}"))
        .to_string()
}

#[test]
fn the_server_log_shows_a_sharing_peers_reachability() {
    let mut server = server_proc(&["--addr", "127.0.0.1:0", "--relay", "off"]);
    let addr = listening_addr(&mut server);
    let dir = tempfile::tempdir().unwrap();
    let (sharer, port) = share(&addr, "reachy", dir.path(), false);
    let line = server.line_with(" reachy is ");
    // The check dials the port the peer registered, on the address its session came
    // from; whether that peer build answers the probe decides the word.
    assert!(
        line.ends_with(&format!("127.0.0.1:{port} reachy is reachable"))
            || line.ends_with(&format!("127.0.0.1:{port} reachy is unreachable")),
        "{line:?}"
    );
    sharer.signal(libc::SIGTERM);
    server.signal(libc::SIGTERM);

    let mut server = server_proc(&[
        "--addr",
        "127.0.0.1:0",
        "--relay",
        "off",
        "--log-format",
        "json",
    ]);
    let addr = listening_addr(&mut server);
    let (sharer, port) = share(&addr, "reachy", dir.path(), false);
    let line = server.line_with("\"event\":\"reachability\"");
    let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object");
    assert_eq!(v["user"], "reachy");
    assert_eq!(v["addr"], format!("127.0.0.1:{port}"));
    assert!(
        v["reach"] == "reachable" || v["reach"] == "unreachable",
        "{line}"
    );
    sharer.signal(libc::SIGTERM);
    server.signal(libc::SIGTERM);
}
