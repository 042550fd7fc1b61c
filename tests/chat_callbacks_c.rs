//! Chat handles and user data in callback mode, from a real C program
//! (`tests/c/chat_callbacks.c`, compiled against the shared library, its config
//! directory pointed at a temporary one): `p2p_chat_event_cb` gets every message and
//! close with the borrowed chat handle and its user data, after the older id-based
//! callbacks (which still get the same chat's id); no message reaches either before
//! `p2p_chat_request_accept()` (called inside the request callback) has returned its
//! handle, over five chats whose other side writes the moment its `p2p_peer_chat()`
//! returns; without a request or chat-opened callback, requests and async answers
//! come to the chat-event callback (owned request, owned chat with the request's user
//! data), and a message sent the moment the async chat was accepted reaches the
//! callback only after the answer's callback (lingering 200 ms) returned; a freed
//! chat's close comes with a NULL handle. See the program's header
//! comment. Run again under valgrind (when installed) with the shipped suppressions
//! and `--error-exitcode`.

mod common;

use common::{build, root, run_to_all_ok, valgrind, Link};
use std::time::Duration;

#[test]
fn chat_callbacks_carry_handles_and_user_data_from_c() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("chat_callbacks");
    build(&root().join("tests/c/chat_callbacks.c"), &exe, Link::Shared);

    // The program guards itself with alarm(); this deadline is the last resort.
    run_to_all_ok(&exe, Duration::from_secs(180));
    if let Some(summary) = valgrind(&exe) {
        println!("valgrind chat_callbacks:");
        for line in summary {
            println!("  {line}");
        }
    }
}
