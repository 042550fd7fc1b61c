//! The C and C++ examples, compiled with the system compiler against both the static
//! and the shared library, run, and run again under valgrind (when installed); and the
//! install step that gives C programs a `pkg-config` entry.

mod common;

use common::{build, have, isolate_config, lib_dir, root, run_ok, valgrind, Link};
use std::path::Path;
use std::process::Command;

/// Build `examples/<src>` linked `link`, run it, then run it under valgrind; returns
/// what the first run printed.
fn build_run_and_valgrind(src: &str, link: Link) -> String {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join(Path::new(src).file_stem().unwrap());
    build(&root().join("examples").join(src), &exe, link);

    if link == Link::Static {
        // Nothing of p2pchat is loaded at run time: the binary needs no libp2pchat.so.
        let ldd = Command::new("ldd").arg(&exe).output();
        if let Ok(ldd) = ldd {
            assert!(
                !String::from_utf8_lossy(&ldd.stdout).contains("libp2pchat"),
                "statically linked {src} still loads libp2pchat.so"
            );
        }
    }

    let out = run_ok(isolate_config(&mut Command::new(&exe), dir.path()));
    assert!(
        out.lines().last() == Some("ALL OK"),
        "{src} ({link:?}) did not end with ALL OK:\n{out}"
    );

    if let Some(summary) = valgrind(&exe) {
        println!("valgrind {src} ({link:?}):");
        for line in summary {
            println!("  {line}");
        }
    }
    out
}

/// What `legacy_flow.cpp` must have shown besides `ALL OK`: each step of the menu
/// flow came through its event queue (the reachability check as an event, bob
/// accepting from his event thread, the chat opened asynchronously over a direct,
/// encrypted link, the echo, the download's progress and its verified end), and the
/// source sets no callback at all.
fn check_legacy_flow(out: &str) {
    for want in [
        "Registered as me with a p2pchat registry",
        "  Registry says: reachable at 127.0.0.1:",
        "Users online: bob me",
        "  [bob] accepted a chat from me (direct)",
        "  Chat with bob open (direct, encrypted)",
        "  Chat: bob: echo: hi bob",
        "  Chat ended",
        "    ... 123457 of 123457 bytes",
        "  Fetched song.mp3 (123457 bytes, direct, verified)",
        "Exited",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(want)),
            "legacy_flow printed no line starting {want:?}:\n{out}"
        );
    }
    let src = std::fs::read_to_string(root().join("examples/legacy_flow.cpp")).unwrap();
    for callback in ["p2p_peer_config_on_", "p2p_peer_config_set_user_data"] {
        assert!(
            !src.contains(callback),
            "legacy_flow.cpp is the callback-free C++ example, but uses {callback}"
        );
    }
}

#[test]
fn c_example_chats_and_fetches_with_the_static_library() {
    build_run_and_valgrind("chat_and_fetch.c", Link::Static);
}

#[test]
fn c_example_chats_and_fetches_with_the_shared_library() {
    build_run_and_valgrind("chat_and_fetch.c", Link::Shared);
}

#[test]
fn c_example_poll_loop_with_the_shared_library() {
    build_run_and_valgrind("poll_loop.c", Link::Shared);
}

#[test]
fn c_example_poll_loop_with_the_static_library() {
    build_run_and_valgrind("poll_loop.c", Link::Static);
}

#[test]
fn cxx_legacy_flow_runs_with_the_static_library() {
    check_legacy_flow(&build_run_and_valgrind("legacy_flow.cpp", Link::Static));
}

#[test]
fn cxx_legacy_flow_runs_with_the_shared_library() {
    check_legacy_flow(&build_run_and_valgrind("legacy_flow.cpp", Link::Shared));
}

/// `make -C examples install PREFIX=...` then
/// `cc app.c $(pkg-config --cflags --libs p2pchat)`, as the examples README says.
#[test]
fn installed_library_builds_a_program_through_pkg_config() {
    if !have("make") || !have("pkg-config") {
        println!("SKIP: make or pkg-config is not installed");
        return;
    }
    let prefix = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("make")
            .arg("-C")
            .arg(root().join("examples"))
            .arg("install")
            .arg(format!("PREFIX={}", prefix.path().display()))
            .arg(format!("LIBDIR={}", lib_dir().display())),
    );
    for f in ["include/p2pchat.h", "lib/libp2pchat.so", "lib/libp2pchat.a"] {
        assert!(prefix.path().join(f).is_file(), "install left out {f}");
    }
    let pc_path = prefix.path().join("lib/pkgconfig");
    let flags = run_ok(
        Command::new("pkg-config")
            .env("PKG_CONFIG_PATH", &pc_path)
            .args(["--cflags", "--libs", "p2pchat"]),
    );
    let version = run_ok(
        Command::new("pkg-config")
            .env("PKG_CONFIG_PATH", &pc_path)
            .args(["--modversion", "p2pchat"]),
    );
    assert_eq!(version.trim(), env!("CARGO_PKG_VERSION"));

    let app = prefix.path().join("app.c");
    std::fs::write(
        &app,
        "#include <p2pchat.h>\n#include <stdio.h>\n#include <string.h>\n\
         int main(void) {\n\
           p2p_registry *r = NULL;\n\
           uint16_t port = 0;\n\
           if (p2p_registry_start(\"127.0.0.1:0\", NULL, NULL, &r) != P2P_OK) return 1;\n\
           if (p2p_registry_port(r, &port) != P2P_OK || port == 0) return 2;\n\
           p2p_registry_free(r);\n\
           printf(\"p2pchat %s ok\\n\", p2p_version());\n\
           return strcmp(p2p_version(), P2PCHAT_VERSION) != 0;\n\
         }\n",
    )
    .unwrap();
    let exe = prefix.path().join("app");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let cmd = format!(
        "{cc} {} -o {} {}",
        app.display(),
        exe.display(),
        flags.trim()
    );
    run_ok(Command::new("sh").arg("-c").arg(&cmd));
    let out = run_ok(&mut Command::new(&exe));
    assert_eq!(
        out.trim(),
        format!("p2pchat {} ok", env!("CARGO_PKG_VERSION"))
    );
}
