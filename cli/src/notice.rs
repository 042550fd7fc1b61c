//! One-line notices about the share, for `share` and `client`: a file left out of the
//! share (with the reason), and the share changing while online (live share). Names are
//! made [`visible`]; long lists are cut to a few names and a count.

use crate::visible::visible;

/// Most names listed per kind of change; the rest are counted.
const NAMES_SHOWN: usize = 3;

/// The line for what the registry found of this peer's listener (`None` while it is
/// unknown): `reachable at 203.0.113.5:4000`, or `not reachable from outside at …`
/// with what that means.
pub fn reachability(reach: p2pcore::reach::Reach, addr: std::net::SocketAddr) -> Option<String> {
    use p2pcore::reach::Reach;
    match reach {
        Reach::Unknown => None,
        Reach::Reachable => Some(format!("reachable at {addr}")),
        Reach::Unreachable => Some(format!(
            "not reachable from outside at {addr}: others reach you through reverse connect, \
             a punched hole or the relay"
        )),
    }
}

/// `not shared: "a,b" (contains a comma: ...)`
pub fn skipped(name: &str, reason: &str) -> String {
    format!("not shared: \"{}\" ({})", visible(name), visible(reason))
}

/// `share updated, now 3 files: added x.txt; removed y.txt; changed z.txt`
pub fn updated(files: usize, added: &[String], removed: &[String], changed: &[String]) -> String {
    let mut parts = Vec::new();
    for (what, names) in [("added", added), ("removed", removed), ("changed", changed)] {
        if names.is_empty() {
            continue;
        }
        let list: Vec<String> = names
            .iter()
            .take(NAMES_SHOWN)
            .map(|n| visible(n).into_owned())
            .collect();
        let mut part = format!("{what} {}", list.join(", "));
        if names.len() > NAMES_SHOWN {
            part.push_str(&format!(" and {} more", names.len() - NAMES_SHOWN));
        }
        parts.push(part);
    }
    let count = if files == 1 {
        "1 file".to_string()
    } else {
        format!("{files} files")
    };
    format!("share updated, now {count}: {}", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_one_line_and_escaped() {
        let names: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
        assert_eq!(
            updated(7, &names, &["old\u{1b}[2J".into()], &[]),
            "share updated, now 7 files: added f0, f1, f2 and 2 more; removed old\\e[2J"
        );
        assert_eq!(
            updated(1, &[], &[], &["a".into()]),
            "share updated, now 1 file: changed a"
        );
        assert_eq!(
            skipped("a\nb", "contains a line break"),
            "not shared: \"a\\nb\" (contains a line break)"
        );
    }
}
