//! Shared by the integration tests that build C and C++ programs against the library:
//! where things are, how to compile against the static or the shared library, how to
//! run a program and (when valgrind is installed) how to run it under valgrind.

#![allow(dead_code)]

pub mod ffi;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The source tree (the root package's directory).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory holding `libp2pchat.so` and `libp2pchat.a` built from this source.
///
/// `cargo test` compiles the package's library once with all its crate types (rlib,
/// cdylib, staticlib) into `<target>/<profile>/deps/`, next to this test executable,
/// but copies them up to `<target>/<profile>/` only on `cargo build`. So the `deps/`
/// copies are the ones that match the code under test; the profile directory is the
/// fallback when they are absent.
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test executable in <profile>/deps");
    let profile = deps.parent().expect("<profile>/deps has a parent");
    let complete = |d: &Path| {
        ["libp2pchat.so", "libp2pchat.a"]
            .iter()
            .all(|l| d.join(l).is_file())
    };
    for dir in [deps, profile] {
        if complete(dir) {
            soname_link(dir);
            return dir.to_path_buf();
        }
    }
    panic!(
        "libp2pchat.so and libp2pchat.a are in neither {} nor {}: build the library first \
         (`cargo build`)",
        deps.display(),
        profile.display()
    );
}

/// The library's SONAME is `libp2pchat.so.0` (build.rs), so a program linked with
/// `-lp2pchat` asks the loader for that name; cargo makes only `libp2pchat.so`. Give
/// the build directory the symlink an install makes (`libp2pchat.so.0` ->
/// `libp2pchat.so`), once: a rebuild replaces the file under it.
fn soname_link(dir: &Path) {
    let link = dir.join("libp2pchat.so.0");
    if link.symlink_metadata().is_err() {
        // Another test may make it at the same moment: AlreadyExists is fine.
        if let Err(e) = std::os::unix::fs::symlink("libp2pchat.so", &link) {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::AlreadyExists,
                "linking {}: {e}",
                link.display()
            );
        }
    }
}

/// The valgrind suppressions shipped with the library (installed as
/// `share/p2pchat/p2pchat.supp`).
pub fn suppressions() -> PathBuf {
    root().join("examples/p2pchat.supp")
}

/// How a program is linked to p2pchat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// `libp2pchat.a` plus the system libraries Rust's std needs.
    Static,
    /// `-lp2pchat` with an rpath to the build directory.
    Shared,
}

/// Whether a source file is C11 or C++17 (by extension).
fn is_cxx(src: &Path) -> bool {
    matches!(
        src.extension().and_then(|e| e.to_str()),
        Some("cpp" | "cc" | "cxx")
    )
}

/// The compiler command for `src`, strict warnings on, header from `include/`.
pub fn compiler(src: &Path) -> Command {
    let mut cmd = if is_cxx(src) {
        let mut c = Command::new(std::env::var("CXX").unwrap_or_else(|_| "c++".into()));
        c.arg("-std=c++17");
        c
    } else {
        let mut c = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
        c.args(["-std=c11", "-Wstrict-prototypes"]);
        c
    };
    cmd.args(["-Wall", "-Wextra", "-Werror", "-pedantic", "-g", "-pthread"])
        .arg("-I")
        .arg(root().join("include"));
    cmd
}

/// Compile and link `src` into `out` against the library, panicking with the
/// compiler's output on failure.
pub fn build(src: &Path, out: &Path, link: Link) {
    let lib = lib_dir();
    let mut cmd = compiler(src);
    cmd.arg(src).arg("-o").arg(out);
    match link {
        Link::Static => {
            cmd.arg(lib.join("libp2pchat.a"))
                .args(["-lpthread", "-ldl", "-lm"]);
        }
        Link::Shared => {
            cmd.arg("-L")
                .arg(&lib)
                .arg(format!("-Wl,-rpath,{}", lib.display()))
                .arg("-lp2pchat");
        }
    }
    let output = cmd.output().expect("running the C/C++ compiler");
    assert!(
        output.status.success(),
        "compiling {} ({link:?}) failed:\n{cmd:?}\n{}{}",
        src.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Run a program; panic with its output unless it exits 0. Returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let output = cmd.output().expect("running the program");
    assert_success(cmd, &output);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn assert_success(cmd: &Command, output: &Output) {
    assert!(
        output.status.success(),
        "{cmd:?} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Point a program's per-user configuration (`XDG_CONFIG_HOME`, `HOME`) at `dir`, a
/// temporary directory, so the identity keys and pins a peer keeps by default land
/// there and never in the real user's config.
pub fn isolate_config<'a>(cmd: &'a mut Command, dir: &Path) -> &'a mut Command {
    cmd.env("XDG_CONFIG_HOME", dir.join("config"))
        .env("HOME", dir.join("home"))
}

/// Whether a program is on PATH (answers `--version`).
pub fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Run `program` under valgrind's memcheck: any memory error or definitely- or
/// possibly-lost block (beyond the shipped suppressions) fails the test. Returns valgrind's summary lines, or `None` (after saying why) when
/// valgrind is not installed.
pub fn valgrind(program: &Path) -> Option<Vec<String>> {
    if !have("valgrind") {
        println!(
            "SKIP valgrind run of {}: valgrind is not installed",
            program.display()
        );
        return None;
    }
    let mut cmd = Command::new("valgrind");
    // As a user of the library runs it: definite and possible leaks count as errors,
    // with only the shipped suppressions (examples/p2pchat.supp).
    cmd.args(["--leak-check=full", "--error-exitcode=1", "--track-fds=no"])
        .arg(format!("--suppressions={}", suppressions().display()))
        .arg(program);
    let config = tempfile::tempdir().expect("a temporary config directory");
    isolate_config(&mut cmd, config.path());
    let output = cmd.output().expect("running valgrind");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_success(&cmd, &output);
    let summary: Vec<String> = stderr
        .lines()
        .filter(|l| {
            [
                "ERROR SUMMARY:",
                "definitely lost:",
                "indirectly lost:",
                "possibly lost:",
                "still reachable:",
                "All heap blocks",
            ]
            .iter()
            .any(|k| l.contains(k))
        })
        .map(|l| l.to_string())
        .collect();
    let errors = summary
        .iter()
        .find(|l| l.contains("ERROR SUMMARY"))
        .cloned();
    assert!(
        errors
            .as_deref()
            .is_some_and(|l| l.contains("ERROR SUMMARY: 0 errors")),
        "valgrind found errors in {}:\n{stderr}",
        program.display()
    );
    let definite = summary.iter().find(|l| l.contains("definitely lost"));
    assert!(
        definite.is_none_or(|l| l.contains("definitely lost: 0 bytes")),
        "valgrind found definite leaks in {}:\n{stderr}",
        program.display()
    );
    Some(summary)
}

/// Run a C test program that guards itself with `alarm()` and ends by printing
/// `ALL OK`; `limit` is the last resort should its own guard fail (the child is then
/// killed and the test fails, so a hang never stalls the suite).
pub fn run_to_all_ok(exe: &Path, limit: std::time::Duration) {
    use std::process::Stdio;
    use std::time::Instant;
    let name = exe.file_name().map_or_else(
        || exe.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let config = tempfile::tempdir().expect("a temporary config directory");
    let mut child = isolate_config(&mut Command::new(exe), config.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {name}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} hung past its own alarm() guard");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        status.success() && stdout.lines().last() == Some("ALL OK"),
        "{name} failed with {status}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
}
