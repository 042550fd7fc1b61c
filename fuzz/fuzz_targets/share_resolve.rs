//! Name resolution in a share: whatever name is asked for, only the share's own files
//! are ever opened, and nothing outside the directory.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p2pcore::share::Share;
use std::sync::OnceLock;

fn share() -> &'static Share {
    static SHARE: OnceLock<Share> = OnceLock::new();
    SHARE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("p2pchat-fuzz-share-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        std::fs::write(dir.join("a.txt"), b"a").unwrap();
        std::fs::write(dir.join("b c.txt"), b"bc").unwrap();
        let outside = std::env::temp_dir().join(format!("p2pchat-fuzz-outside-{}", std::process::id()));
        std::fs::write(&outside, b"secret").unwrap();
        let _ = std::os::unix::fs::symlink(&outside, dir.join("link"));
        let share = Share::open(&dir).unwrap();
        share.scan().unwrap();
        share
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else { return };
    if let Ok((_, info)) = share().open_file(name) {
        assert!(name == "a.txt" || name == "b c.txt", "opened {name:?}");
        assert_eq!(info.name, name);
    }
});
