//! Keys for people: `p2pchat id` and `p2pchat trust`, the lines that show a
//! fingerprint (whose key, verified or not), and the warning for a changed key, which
//! says exactly how to accept the new one.
//!
//! This module decides nothing about trust itself: pins are checked by p2pcore
//! (`known_keys`); `trust` only replaces a pin after the person has compared the
//! fingerprint, and only with the key the registry lists at that moment.

use crate::args::{registry_address, IdArgs, TrustArgs};
use crate::failure::{registry_failure, Failure, EXIT_KEY_CHANGED};
use crate::output;
use crate::visible::visible;
use p2pcore::identity::{default_identity_file, Fingerprint, Identity, PublicKey};
use p2pcore::known_keys::{KnownKeys, Subject};
use p2pcore::peer::{Peer, PeerInfo, RegistryClient};
use p2pcore::Error;
use std::path::{Path, PathBuf};

/// The lines of the warning for a changed key in `e` (none for other errors), for a
/// command that used the registry at `registry` (as typed) and the known-keys file
/// `known_keys` when one was given explicitly (the advice repeats it).
pub fn warning(registry: &str, known_keys: Option<&Path>, e: &Error) -> Vec<String> {
    let Error::KeyChanged {
        subject,
        pinned,
        offered,
    } = e
    else {
        return Vec::new();
    };
    let addr = registry_address(registry);
    let keys_flag = known_keys
        .map(|p| format!(" --known-keys {}", shell_word(&p.display().to_string())))
        .unwrap_or_default();
    if subject.starts_with("registry ") {
        let given = registry.contains('#');
        let mut lines = vec![
            format!("@@@ WARNING: THE REGISTRY AT {addr} DOES NOT HAVE THE EXPECTED KEY @@@"),
            format!(
                "  {} {pinned}",
                if given {
                    "given (after #):"
                } else {
                    "pinned:         "
                }
            ),
            format!("  offered:         {offered}"),
            "Someone may be posing as the registry, or it was set up again with a new key."
                .to_string(),
            "Nothing was registered or asked. Ask the registry's operator for its fingerprint"
                .to_string(),
            "(`p2pchat server` prints it); only if it is the offered one, run the command again"
                .to_string(),
            "with the registry pinned to it (this replaces the old pin):".to_string(),
        ];
        lines.push(format!("  --registry {addr}#{offered}{keys_flag}"));
        return lines;
    }
    let name = visible(subject);
    vec![
        format!("@@@ WARNING: THE KEY OF {name} HAS CHANGED @@@"),
        format!("  pinned:  {pinned}"),
        format!("  offered: {offered}"),
        format!(
            "Someone may be posing as {name} (a compromised or restarted registry, or an attacker"
        ),
        format!(
            "on the way), or {name} has a new key. Nothing was sent to them. Ask {name} for their"
        ),
        format!(
            "fingerprint (`p2pchat id {name}` prints it); only if it is the offered one, accept it:"
        ),
        format!("  p2pchat trust {name} {offered} --registry {addr}{keys_flag}"),
    ]
}

/// `text` as one shell word for a command to copy: quoted when it holds anything but
/// plain path characters, and made visible.
fn shell_word(text: &str) -> String {
    let plain = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%~".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", visible(&text.replace('\'', "'\\''")))
    }
}

/// How a user's listed key reads: `key ABCD-…`, or why there is none.
pub fn listed_key(info: &PeerInfo, registry_is_legacy: bool) -> String {
    match info.key {
        Some(k) => format!("key {}", k.fingerprint()),
        None if registry_is_legacy => {
            "no key: unverified (an original registry, which lists no keys)".to_string()
        }
        None if info.legacy => "no key: unverified (an original client, unencrypted)".to_string(),
        None => "no key: unverified (registered over an unencrypted session)".to_string(),
    }
}

/// A warning when `name`'s listed key differs from the one pinned for them (p2pchat
/// refuses to talk to them until the person accepts it), else `None`.
pub fn pin_conflict(
    known_keys: Option<&Path>,
    registry: &str,
    name: &str,
    listed: Option<PublicKey>,
) -> Option<String> {
    let listed = listed?;
    let keys = KnownKeys::open(known_keys?).ok()?;
    let pinned = keys.pinned(Subject::Peer {
        registry: registry_address(registry),
        name,
    })?;
    (pinned != listed).then(|| {
        format!(
            "WARNING: this is not the key you pinned for {} ({}): chats and downloads with them are refused until you accept it (p2pchat trust)",
            visible(name),
            pinned.fingerprint()
        )
    })
}

/// The status line about the registry session: its key, or that it is unencrypted.
pub fn registry_status(peer: &Peer, registry: &str) -> String {
    let addr = registry_address(registry);
    match peer.registry_key() {
        Some(k) => format!("registry {addr}: key {} (secured session)", k.fingerprint()),
        None if peer.registry_is_legacy() => format!(
            "registry {addr}: session UNENCRYPTED (an original server: no keys, no name ownership)"
        ),
        None => format!(
            "registry {addr}: session UNENCRYPTED (the registry offers no secured link; names are not bound to keys)"
        ),
    }
}

/// The status line with this user's own fingerprint.
pub fn own_key(peer: &Peer) -> String {
    format!(
        "your key: {} (others compare this fingerprint)",
        peer.fingerprint()
    )
}

/// How a chat request's caller is shown: `(key ABCD-…)` for a caller that proved the
/// key the registry lists for the name, else a loud UNVERIFIED mark.
pub fn caller_mark(key: Option<PublicKey>, verified: bool, legacy: bool) -> String {
    match (key, verified) {
        (Some(k), true) => format!("(key {})", k.fingerprint()),
        (Some(k), false) => format!(
            "(UNVERIFIED: key {} is not the one the registry lists)",
            k.fingerprint()
        ),
        (None, _) if legacy => "(UNVERIFIED, unencrypted: an original client)".to_string(),
        (None, _) => "(UNVERIFIED, unencrypted: registered without a key)".to_string(),
    }
}

/// The line under an incoming chat request about the caller `from` (a name they
/// chose): their fingerprint when verified, else why nobody vouches for the name.
pub fn caller_line(from: &str, key: Option<PublicKey>, verified: bool, legacy: bool) -> String {
    let name = visible(from);
    match (key, verified) {
        (Some(k), true) => format!(
            "{name}'s key: {} (verified: the key the registry lists for {name})",
            k.fingerprint()
        ),
        (Some(k), false) => format!(
            "{name} is UNVERIFIED: key {} is not the one the registry lists for {name}",
            k.fingerprint()
        ),
        (None, _) if legacy => format!(
            "{name} is UNVERIFIED and unencrypted: an original client (anyone could use this name)"
        ),
        (None, _) => format!(
            "{name} is UNVERIFIED and unencrypted: registered without a key (anyone could use this name)"
        ),
    }
}

/// A warning for a chat that is not secured (the partner has no key the registry
/// lists, or is an original client), else `None`.
pub fn unsecured_chat(chat: &p2pcore::peer::Chat) -> Option<String> {
    if chat.is_encrypted() {
        return None;
    }
    let who = visible(chat.peer());
    Some(if chat.is_legacy() {
        format!("the chat with {who} is UNENCRYPTED and {who} is UNVERIFIED (an original client)")
    } else {
        format!(
            "the chat with {who} is UNENCRYPTED and {who} is UNVERIFIED (registered without a key)"
        )
    })
}

/// The key file for `user`, or `explicit` when given.
fn identity_path(explicit: Option<&Path>, user: Option<&str>) -> Result<PathBuf, Failure> {
    match (explicit, user) {
        (Some(p), _) => Ok(p.to_path_buf()),
        (None, Some(u)) => Ok(default_identity_file(u)?),
        (None, None) => Err(Failure {
            code: crate::failure::EXIT_USAGE,
            message: "whose key? give USERNAME (or set P2PCHAT_USER) or --identity FILE".into(),
        }),
    }
}

/// `p2pchat id [--identity FILE] [USERNAME]`: the fingerprint on stdout; on stderr
/// where the key is and whether it was just created.
pub fn id(args: &IdArgs) -> Result<(), Failure> {
    let path = identity_path(args.identity.as_deref(), args.user.as_deref())?;
    let existed = path.exists();
    let identity = Identity::load_or_create(&path)?;
    output::print(&identity.fingerprint().to_string())?;
    let shown = visible(&path.display().to_string()).into_owned();
    if existed {
        output::err_line(&format!("key file: {shown}"));
    } else {
        output::err_line(&format!(
            "created a new key in {shown} (keep it: your username belongs to it)"
        ));
    }
    Ok(())
}

/// `p2pchat trust NAME FINGERPRINT`: pin the key the registry lists for NAME now, if
/// its fingerprint is FINGERPRINT; otherwise refuse and change nothing.
pub fn trust(args: &TrustArgs) -> Result<(), Failure> {
    let reg = &args.registry;
    let explicit = reg.known_keys.as_deref();
    let Some(file) = reg.known_keys_file() else {
        return Err(Failure::new(
            "no known-keys file to write to: set HOME or XDG_CONFIG_HOME, or give --known-keys FILE",
        ));
    };
    let client = RegistryClient::connect_pinned(&reg.registry, reg.mode(), Some(&file))
        .map_err(|e| registry_failure(&reg.registry, explicit, &e))?;
    let name = visible(&args.name).into_owned();
    let info = client
        .peer_info(&args.name)
        .map_err(|e| crate::failure::failure_at(&reg.registry, explicit, e))?;
    let Some(listed) = info.key else {
        return Err(Failure::new(format!(
            "the registry lists no key for {name} ({}): there is nothing to trust",
            listed_key(&info, client.is_legacy())
        )));
    };
    let want: Fingerprint = args.fingerprint;
    if listed.fingerprint() != want {
        return Err(Failure {
            code: EXIT_KEY_CHANGED,
            message: format!(
                "refused: the registry lists key {} for {name}, not the {want} you gave; nothing was changed (someone may be posing as {name})",
                listed.fingerprint()
            ),
        });
    }
    let keys = KnownKeys::open(&file)?;
    let subject = Subject::Peer {
        registry: reg.address(),
        name: &args.name,
    };
    let before = keys.pinned(subject);
    keys.pin(subject, &listed)?;
    let addr = reg.address();
    output::print(&match before {
        Some(old) if old == listed => {
            format!("{name}'s key {want} was already trusted (registry {addr})")
        }
        Some(old) => format!(
            "trusted {name}'s new key {want} (registry {addr}); it replaces {}",
            old.fingerprint()
        ),
        None => format!("trusted {name}'s key {want} (registry {addr})"),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(c: char) -> Fingerprint {
        Fingerprint::parse(&c.to_string().repeat(32)).unwrap()
    }

    #[test]
    fn a_changed_user_key_names_both_fingerprints_and_the_trust_command() {
        let e = Error::KeyChanged {
            subject: "bo\u{1b}b".into(),
            pinned: fp('A'),
            offered: fp('B'),
        };
        let lines = warning("127.0.0.1:8080", Some(Path::new("/k")), &e);
        let text = lines.join("\n");
        assert!(text.contains("THE KEY OF bo\\eb HAS CHANGED"), "{text}");
        assert!(text.contains(&format!("pinned:  {}", fp('A'))), "{text}");
        assert!(text.contains(&format!("offered: {}", fp('B'))), "{text}");
        assert!(
            text.ends_with(&format!(
                "p2pchat trust bo\\eb {} --registry 127.0.0.1:8080 --known-keys /k",
                fp('B')
            )),
            "{text}"
        );
        assert!(lines.iter().all(|l| !l.contains('\n')));
    }

    #[test]
    fn a_changed_registry_key_says_how_to_pin_the_new_one() {
        let e = Error::KeyChanged {
            subject: "registry 127.0.0.1:8080".into(),
            pinned: fp('A'),
            offered: fp('C'),
        };
        let given = format!("127.0.0.1:8080#{}", fp('A'));
        let text = warning(&given, None, &e).join("\n");
        assert!(
            text.contains(&format!("given (after #): {}", fp('A'))),
            "{text}"
        );
        assert!(
            text.ends_with(&format!("--registry 127.0.0.1:8080#{}", fp('C'))),
            "{text}"
        );
        let text = warning("127.0.0.1:8080", None, &e).join("\n");
        assert!(text.contains("pinned:"), "{text}");
        assert!(warning("x:1", None, &Error::Closed).is_empty());
    }
}
