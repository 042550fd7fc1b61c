//! `p2pchat server` keeps its key and the name claims in its data directory across
//! restarts; `p2pchat server release-name` frees a name (and says so clearly while the
//! server holding the store runs); the default data directory follows XDG.

mod common;

use common::*;
use p2pcore::identity::Identity;
use p2pcore::secure::{self, Cipher, DialParams, Dialed, Kind};
use std::io::{BufRead, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

const CLAIMED: &str = "ERR,Username is claimed by another key";

/// A server on `dir` (or the default directory under `home`); its address and key line.
fn start(extra: &[&str], home: Option<&Path>) -> (Proc, String, String) {
    let mut args = vec!["server", "--addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut cmd = command(&args);
    if let Some(h) = home {
        cmd.env("HOME", h).env_remove("XDG_DATA_HOME");
    }
    let mut p = Proc::spawn(cmd.stdin(Stdio::null()));
    let first = p.line();
    let addr = first
        .strip_prefix("registry listening on ")
        .unwrap_or_else(|| panic!("first line: {first:?}"))
        .to_string();
    let second = p.line();
    let key = second
        .strip_prefix("registry key: ")
        .unwrap_or_else(|| panic!("second line: {second:?}"))
        .to_string();
    (p, addr, key)
}

fn stop(mut p: Proc) {
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit(WAIT).code(), Some(130));
}

/// `INIT,<name>,5000` over an encrypted session as `id`; the answer line. Also checks
/// the registry's key is the one the server printed.
fn init_as(addr: &str, id: &Identity, name: &str, printed_key: &str) -> String {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let dialed = secure::dial(
        stream,
        DialParams {
            kind: Kind::Registry,
            identity: id,
            remote: None,
            hello: b"",
            cipher: Cipher::preferred(),
            deadline: Instant::now() + WAIT,
        },
    )
    .unwrap();
    let Dialed::Secured(mut s) = dialed else {
        panic!("refused")
    };
    assert_eq!(s.remote.fingerprint().to_string(), printed_key);
    s.writer
        .write_all(format!("INIT,{name},5000\n").as_bytes())
        .unwrap();
    let mut line = String::new();
    s.reader.read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

#[test]
fn a_restarted_server_keeps_its_key_and_claims_and_release_name_frees_a_name() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let (alice, mallory) = (Identity::generate().unwrap(), Identity::generate().unwrap());

    let (server, addr, key) = start(&["--data-dir", d], None);
    assert_eq!(init_as(&addr, &alice, "alice", &key), "OK");
    // While the server runs, the store is locked: a clear refusal, nothing changed.
    let o = p2pchat(&["server", "release-name", "alice", "--data-dir", d]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(o.stderr.contains("is running"), "{o:?}");
    assert_one_line_error(&o);
    stop(server);

    let (server, addr, key2) = start(&["--data-dir", d], None);
    assert_eq!(key2, key, "the same key after a restart");
    assert_eq!(init_as(&addr, &mallory, "alice", &key), CLAIMED);
    assert_eq!(init_as(&addr, &alice, "alice", &key), "OK");
    stop(server);

    let o = p2pchat(&["server", "release-name", "alice", "--data-dir", d]);
    assert!(o.status.success(), "{o:?}");
    assert!(o.stdout.contains("released the claim on alice"), "{o:?}");
    let o = p2pchat(&["server", "release-name", "alice", "--data-dir", d]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(o.stderr.contains("alice has no claim"), "{o:?}");

    let (server, addr, _) = start(&["--data-dir", d], None);
    assert_eq!(init_as(&addr, &mallory, "alice", &key), "OK");
    stop(server);
}

#[test]
fn the_default_data_directory_is_under_the_users_data_home_and_ephemeral_keeps_none() {
    let home = tempfile::tempdir().unwrap();
    let (server, _, key) = start(&[], Some(home.path()));
    let dir = home.path().join(".local/share/p2pchat/registry");
    assert!(dir.join("registry.key").is_file());
    assert!(dir.join("claims.redb").is_file());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    stop(server);
    let (server, _, again) = start(&[], Some(home.path()));
    assert_eq!(again, key);
    stop(server);

    let empty = tempfile::tempdir().unwrap();
    let (server, _, k1) = start(&["--ephemeral"], Some(empty.path()));
    stop(server);
    let (server, _, k2) = start(&["--ephemeral"], Some(empty.path()));
    stop(server);
    assert_ne!(k1, k2, "a new key each start");
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
    // Starting twice on one directory: the second says why it cannot.
    let (server, _, _) = start(&[], Some(home.path()));
    let mut second = command(&["server", "--addr", "127.0.0.1:0"]);
    second.env("HOME", home.path()).env_remove("XDG_DATA_HOME");
    let o = run(second);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(o.stderr.contains("another registry is running"), "{o:?}");
    stop(server);
}
