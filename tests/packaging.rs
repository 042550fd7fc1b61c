//! The library packaged like a system library: the shared library's SONAME, the header
//! in the C and C++ standards its preamble promises, and an install into a temporary
//! prefix (`make -C examples install`) that programs then find through pkg-config and
//! CMake's `find_package(p2pchat)`, run without `LD_LIBRARY_PATH` and, under valgrind
//! with the installed suppressions, with `--error-exitcode=1`.

mod common;

use common::{have, lib_dir, root, run_ok};
use std::path::Path;
use std::process::Command;

const SONAME: &str = "libp2pchat.so.0";

/// `readelf -d` of `file`, or `None` (said) when readelf is missing.
fn dynamic_section(file: &Path) -> Option<String> {
    if !have("readelf") {
        println!("SKIPPED readelf checks: readelf is not installed");
        return None;
    }
    Some(run_ok(Command::new("readelf").arg("-d").arg(file)))
}

#[test]
fn shared_library_has_the_soname() {
    let Some(dynamic) = dynamic_section(&lib_dir().join("libp2pchat.so")) else {
        return;
    };
    assert!(
        dynamic.contains(&format!("Library soname: [{SONAME}]")),
        "{dynamic}"
    );
}

#[test]
fn header_compiles_as_c99_and_cxx11() {
    let dir = tempfile::tempdir().unwrap();
    for (name, compiler, std) in [
        (
            "h.c",
            std::env::var("CC").unwrap_or_else(|_| "cc".into()),
            "-std=c99",
        ),
        (
            "h.cpp",
            std::env::var("CXX").unwrap_or_else(|_| "c++".into()),
            "-std=c++11",
        ),
    ] {
        let src = dir.path().join(name);
        std::fs::write(
            &src,
            "#include \"p2pchat.h\"\nint main(void) { return P2P_OK; }\n",
        )
        .unwrap();
        run_ok(
            Command::new(&compiler)
                .args([
                    std,
                    "-Wall",
                    "-Wextra",
                    "-pedantic",
                    "-Werror",
                    "-fsyntax-only",
                ])
                .arg("-I")
                .arg(root().join("include"))
                .arg(&src),
        );
    }
}

/// Run an installed consumer with nothing pointing the loader at the library: the
/// rpath from pkg-config or CMake must be enough.
fn run_consumer(exe: &Path) {
    let out = run_ok(Command::new(exe).env_remove("LD_LIBRARY_PATH"));
    assert_eq!(
        out.trim(),
        format!("consumer {} ok", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn install_then_pkg_config_and_cmake_consumers_build_and_run() {
    if !have("make") || !have("pkg-config") {
        println!("SKIPPED: make or pkg-config is not installed");
        return;
    }
    let prefix = tempfile::tempdir().unwrap();
    let p = prefix.path();
    run_ok(
        Command::new("make")
            .arg("-C")
            .arg(root().join("examples"))
            .arg("install")
            .arg(format!("PREFIX={}", p.display()))
            .arg(format!("LIBDIR={}", lib_dir().display())),
    );
    let version = env!("CARGO_PKG_VERSION");
    let real = format!("libp2pchat.so.{version}");
    for f in [
        "include/p2pchat.h",
        &format!("lib/{real}"),
        "lib/libp2pchat.a",
        "lib/pkgconfig/p2pchat.pc",
        "lib/cmake/p2pchat/p2pchatConfig.cmake",
        "lib/cmake/p2pchat/p2pchatConfigVersion.cmake",
        "share/p2pchat/p2pchat.supp",
    ] {
        assert!(p.join(f).is_file(), "install left out {f}");
    }
    // The usual chain: libp2pchat.so -> libp2pchat.so.0 -> libp2pchat.so.M.m.p.
    let link = |name: &str| std::fs::read_link(p.join("lib").join(name)).unwrap();
    assert_eq!(link(SONAME), Path::new(&real));
    assert_eq!(link("libp2pchat.so"), Path::new(SONAME));
    // Stripped: no debug sections left, much smaller than the build's copy.
    let installed = std::fs::metadata(p.join("lib").join(&real)).unwrap().len();
    let built = std::fs::metadata(lib_dir().join("libp2pchat.so"))
        .unwrap()
        .len();
    println!("libp2pchat.so: built {built} bytes, installed {installed} bytes");
    if have("readelf") {
        let sections = run_ok(
            Command::new("readelf")
                .arg("-S")
                .arg(p.join("lib").join(&real)),
        );
        assert!(!sections.contains(".debug_"), "not stripped:\n{sections}");
        let dynamic = dynamic_section(&p.join("lib").join(&real)).unwrap();
        assert!(dynamic.contains(&format!("Library soname: [{SONAME}]")));
    }

    // pkg-config consumer.
    let pc_path = p.join("lib/pkgconfig");
    let pkg = |args: &[&str]| {
        run_ok(
            Command::new("pkg-config")
                .env("PKG_CONFIG_PATH", &pc_path)
                .args(args),
        )
    };
    assert_eq!(pkg(&["--modversion", "p2pchat"]).trim(), version);
    let flags = pkg(&["--cflags", "--libs", "p2pchat"]);
    let src = root().join("tests/c/consumer.c");
    let exe = p.join("consumer_pkgconfig");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    run_ok(Command::new("sh").arg("-c").arg(format!(
        "{cc} -std=c99 -Wall -Wextra -pedantic -Werror {} -o {} {}",
        src.display(),
        exe.display(),
        flags.trim()
    )));
    if let Some(dynamic) = dynamic_section(&exe) {
        assert!(
            dynamic.contains(&format!("Shared library: [{SONAME}]")),
            "the program must need the SONAME:\n{dynamic}"
        );
    }
    run_consumer(&exe);

    // Under valgrind, as the README tells users to run it: the installed suppressions
    // and --error-exitcode=1 (possible leaks count).
    if have("valgrind") {
        let supp = p.join("share/p2pchat/p2pchat.supp");
        let mut cmd = Command::new("valgrind");
        cmd.args(["--leak-check=full", "--error-exitcode=1"])
            .arg(format!("--suppressions={}", supp.display()))
            .arg(&exe);
        let out = cmd.output().unwrap();
        common::assert_success(&cmd, &out);
    } else {
        println!("SKIPPED valgrind run: valgrind is not installed");
    }

    // CMake consumer: find_package refuses another major and takes ours.
    if !have("cmake") {
        println!("SKIPPED CMake consumer: cmake is not installed");
        return;
    }
    let project = p.join("cmake_consumer");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::copy(&src, project.join("consumer.c")).unwrap();
    std::fs::write(
        project.join("CMakeLists.txt"),
        format!(
            "cmake_minimum_required(VERSION 3.13)\n\
             project(consumer C)\n\
             find_package(p2pchat 99.0 QUIET)\n\
             if(p2pchat_FOUND)\n  message(FATAL_ERROR \"p2pchat accepted for 99.0\")\nendif()\n\
             find_package(p2pchat {}.{} REQUIRED)\n\
             add_executable(consumer consumer.c)\n\
             target_link_libraries(consumer PRIVATE p2pchat::p2pchat)\n\
             add_executable(consumer_static consumer.c)\n\
             target_link_libraries(consumer_static PRIVATE p2pchat::p2pchat_static)\n",
            env!("CARGO_PKG_VERSION_MAJOR"),
            env!("CARGO_PKG_VERSION_MINOR")
        ),
    )
    .unwrap();
    let build = p.join("cmake_build");
    run_ok(
        Command::new("cmake")
            .arg("-S")
            .arg(&project)
            .arg("-B")
            .arg(&build)
            .arg(format!("-DCMAKE_PREFIX_PATH={}", p.display())),
    );
    run_ok(Command::new("cmake").arg("--build").arg(&build));
    run_consumer(&build.join("consumer"));
    run_consumer(&build.join("consumer_static"));
}
