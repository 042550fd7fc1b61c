//! Events you pull, in Rust: peers built with `PeerBuilder::event_queue` report through
//! `Peer::next_event` / `Peer::events` instead of hooks. An async chat is answered as
//! `Event::ChatOpened` with the chat; the request, its messages in order and the close
//! come as events; a cancelled async chat answers `Cancelled`; hooks set alongside a
//! queue are never called; the iterator ends once the peer has stopped. A message sent
//! the instant an async chat is accepted never comes (as an event or a hook call)
//! before the answer handing over its chat.

use p2pcore::peer::{ChatClosedBy, Event, Peer};
use p2pcore::registry::Registry;
use p2pcore::ErrorCode;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

fn queued(registry: SocketAddr, name: &str, dir: &TempDir, hook_calls: &Arc<AtomicUsize>) -> Peer {
    let share = dir.path().join(name);
    std::fs::create_dir(&share).unwrap();
    let calls = hook_calls.clone();
    Peer::builder(&registry.to_string(), name, &share)
        .listen_ip("127.0.0.1".parse().unwrap())
        .identity_file(dir.path().join(format!("{name}.key")))
        // Set before the queue: never called.
        .on_chat_message(move |_, _, _| {
            calls.fetch_add(1, Ordering::SeqCst);
        })
        .event_queue(16)
        .connect()
        .unwrap()
}

/// The next event other than background ones.
fn next(peer: &Peer) -> Event {
    loop {
        match peer.next_event(WAIT).expect("an event within 10 s") {
            Event::Peer(_) => continue,
            e => return e,
        }
    }
}

#[test]
fn async_chat_request_messages_and_close_come_as_events() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    let hook_calls = Arc::new(AtomicUsize::new(0));
    let alice = queued(r.local_addr(), "alice", &dir, &hook_calls);
    let bob = queued(r.local_addr(), "bob", &dir, &hook_calls);
    assert!(bob.has_event_queue());

    let request = alice.chat_async("bob").unwrap();
    let Event::ChatRequest(req) = next(&bob) else {
        panic!("expected a chat request")
    };
    assert_eq!(req.from(), "alice");
    let b_chat = req.accept().unwrap();
    let a_chat = match next(&alice) {
        Event::ChatOpened {
            request: n,
            user,
            result,
        } => {
            assert_eq!((n, user.as_str()), (request, "bob"));
            result.unwrap()
        }
        other => panic!("expected ChatOpened, got {other:?}"),
    };
    for i in 0..5 {
        a_chat
            .send_within(&format!("m{i}"), Duration::from_secs(5))
            .unwrap();
    }
    for i in 0..5 {
        match next(&bob) {
            Event::ChatMessage { chat, from, text } => {
                assert_eq!((chat, from.as_str()), (b_chat.id(), "alice"));
                assert_eq!(text, format!("m{i}"));
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }
    a_chat.close();
    match next(&bob) {
        Event::ChatClosed { chat, by, .. } => {
            assert_eq!((chat, by), (b_chat.id(), ChatClosedBy::Remote))
        }
        other => panic!("expected the close, got {other:?}"),
    }

    // Cancelled: answered at once with Cancelled; a second cancel finds nothing.
    let request = alice.chat_async("bob").unwrap();
    assert!(alice.chat_cancel(request));
    assert!(!alice.chat_cancel(request));
    loop {
        match next(&alice) {
            Event::ChatClosed { .. } => continue, // the first chat's, on alice's side
            Event::ChatOpened {
                request: n, result, ..
            } => {
                assert_eq!(n, request);
                assert_eq!(result.unwrap_err().code(), ErrorCode::Cancelled);
                break;
            }
            other => panic!("expected ChatOpened, got {other:?}"),
        }
    }
    let Event::ChatRequest(req) = next(&bob) else {
        panic!("expected the second request")
    };
    req.decline();
    assert_eq!(hook_calls.load(Ordering::SeqCst), 0, "a hook was called");

    // The iterator ends once the peer has stopped and its queue is drained.
    bob.shutdown();
    assert!(bob.events().count() < 100);
    alice.shutdown();
}

/// The other side sends a message the instant it accepts (from its request hook, in
/// the same burst as the answer), for several rounds: each round, the first event of
/// the new chat alice takes is the `ChatOpened` that hands her the chat, then that
/// message; nothing of the chat comes before the answer that opens it.
#[test]
fn async_chat_opened_comes_before_a_message_sent_the_instant_it_is_accepted() {
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    let hook_calls = Arc::new(AtomicUsize::new(0));
    let alice = queued(r.local_addr(), "alice", &dir, &hook_calls);
    let share = dir.path().join("bob");
    std::fs::create_dir(&share).unwrap();
    let bob = Peer::builder(&r.local_addr().to_string(), "bob", &share)
        .listen_ip("127.0.0.1".parse().unwrap())
        .identity_file(dir.path().join("bob.key"))
        .on_chat_request(|req| {
            if let Ok(chat) = req.accept() {
                let _ = chat.send("hello at once");
                // The handle is dropped; the chat stays open until alice closes it.
            }
        })
        .connect()
        .unwrap();

    // Busy threads competing for the CPUs, so that library threads get preempted at
    // any point (as on a loaded machine): the window between a chat's reader starting
    // and the answer being queued, if there is one, is then hit in some rounds.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spinners: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    const ROUNDS: usize = 150;
    let mut early = 0;
    for round in 0..ROUNDS {
        let request = alice.chat_async("bob").unwrap();
        let mut opened = None;
        while opened.is_none() {
            match next(&alice) {
                Event::ChatOpened {
                    request: n, result, ..
                } => {
                    assert_eq!(n, request);
                    opened = Some(result.unwrap());
                }
                Event::ChatMessage { text, .. } => {
                    // A message of the chat this request opens, before its answer.
                    assert_eq!(text, "hello at once");
                    early += 1;
                    break;
                }
                // A previous round's chat ending.
                Event::ChatClosed { .. } => continue,
                other => panic!("round {round}: unexpected {other:?}"),
            }
        }
        let Some(chat) = opened else {
            // Seen out of order: take the answer too so the next round starts clean.
            loop {
                if let Event::ChatOpened { result, .. } = next(&alice) {
                    result.unwrap().close();
                    break;
                }
            }
            continue;
        };
        match next(&alice) {
            Event::ChatMessage { chat: id, text, .. } => {
                assert_eq!((id, text.as_str()), (chat.id(), "hello at once"));
            }
            other => panic!("round {round}: expected the message, got {other:?}"),
        }
        chat.close();
    }
    stop.store(true, Ordering::Relaxed);
    for s in spinners {
        s.join().unwrap();
    }
    assert_eq!(
        early, 0,
        "{early} of {ROUNDS} rounds gave a message before the ChatOpened opening its chat"
    );
    bob.shutdown();
    alice.shutdown();
}

/// Hook mode: the same with `on_chat_opened` and `on_chat_message` hooks. Each chat's
/// first hook call is the `on_chat_opened` that hands it over, then its message.
#[test]
fn async_chat_opened_hook_runs_before_the_chat_s_message_hook() {
    use std::sync::Mutex;
    let r = Registry::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new().unwrap();
    let share = dir.path().join("bob");
    std::fs::create_dir(&share).unwrap();
    let bob = Peer::builder(&r.local_addr().to_string(), "bob", &share)
        .listen_ip("127.0.0.1".parse().unwrap())
        .identity_file(dir.path().join("bob.key"))
        .on_chat_request(|req| {
            if let Ok(chat) = req.accept() {
                let _ = chat.send("hello at once");
            }
        })
        .connect()
        .unwrap();
    // (chat id, "opened" or "message"), in the order the hooks ran.
    let seen: Arc<Mutex<Vec<(u64, &'static str)>>> = Arc::default();
    let share = dir.path().join("alice");
    std::fs::create_dir(&share).unwrap();
    let (opened, message) = (seen.clone(), seen.clone());
    let alice = Peer::builder(&r.local_addr().to_string(), "alice", &share)
        .listen_ip("127.0.0.1".parse().unwrap())
        .identity_file(dir.path().join("alice.key"))
        .on_chat_opened(move |_, _, result| {
            if let Ok(chat) = result {
                // Dropping the handle leaves the chat open (closed each round).
                opened.lock().unwrap().push((chat.id(), "opened"));
            }
        })
        .on_chat_message(move |chat, _, _| message.lock().unwrap().push((chat, "message")))
        .connect()
        .unwrap();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spinners: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    const ROUNDS: usize = 100;
    for round in 0..ROUNDS {
        alice.chat_async("bob").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seen.lock().unwrap().len() < 2 * (round + 1) {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: no answer"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        for chat in alice.chats() {
            chat.close();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for s in spinners {
        s.join().unwrap();
    }
    let seen = seen.lock().unwrap();
    let mut early = 0;
    for (i, (chat, what)) in seen.iter().enumerate() {
        let first = seen.iter().position(|(c, _)| c == chat) == Some(i);
        if first && *what != "opened" {
            early += 1;
        }
    }
    assert_eq!(
        early, 0,
        "{early} of {ROUNDS} chats had their message hook first"
    );
    bob.shutdown();
    alice.shutdown();
}
