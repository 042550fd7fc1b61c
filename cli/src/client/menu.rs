//! The documented menu: main (View Users, Select User, View All Files, Exit) and, for
//! a selected user, View IP/Port, View Filenames, Chat, Fetch File, Back.

//!
//! Every name, filename and error text shown here came from the registry or another
//! peer, so each goes through [`visible`] (or [`Session::name`]).

use super::session::Session;
use super::Quit;
use crate::visible::visible;
use p2pcore::Error;

/// The main menu, until Exit (Ok), end of input or a signal (Err).
pub fn main_menu(s: &mut Session) -> Result<(), Quit> {
    loop {
        let heading = s.style.bold("Main menu");
        let menu =
            format!("\n{heading}\n1. View Users\n2. Select User\n3. View All Files\n0. Exit");
        let choice = s.choose(&menu, "Enter choice: ")?;
        match choice.as_str() {
            "1" => view_users(s),
            "2" => select_user(s)?,
            "3" => view_all_files(s),
            "0" => return Ok(()),
            "" => {}
            other => invalid(s, other, "0-3"),
        }
    }
}

fn invalid(s: &mut Session, input: &str, range: &str) {
    let line = s.style.red(&format!(
        "invalid choice \"{}\": enter {range}",
        visible(input)
    ));
    s.say(line);
}

fn error(s: &mut Session, text: String) {
    let line = s.style.red(&visible(&text));
    s.say(line);
}

fn view_users(s: &mut Session) {
    match s.peer.users() {
        Ok(users) => {
            s.say(format!("Online users ({}):", users.len()));
            let me = s.peer.username().to_string();
            for user in users {
                let mark = if user == me { " (you)" } else { "" };
                let name = s.name(&user);
                s.say(format!("  {name}{mark}"));
            }
        }
        Err(e) => error(s, format!("cannot list users: {e}")),
    }
}

fn view_all_files(s: &mut Session) {
    match s.peer.all_files() {
        Ok(all) => {
            s.say("Shared files:");
            for (user, files) in all {
                let list = if files.is_empty() {
                    "(no files)".to_string()
                } else {
                    visible(&files.join(", ")).into_owned()
                };
                let name = s.name(&user);
                s.say(format!("  {name}: {list}"));
            }
        }
        Err(e) => error(s, format!("cannot list files: {e}")),
    }
}

/// Ask for a username until an online one is given (or an empty line goes back).
fn select_user(s: &mut Session) -> Result<(), Quit> {
    loop {
        let name = s.read("Enter username (empty to go back): ")?;
        if name.is_empty() {
            return Ok(());
        }
        match s.peer.peer_addr(&name) {
            Ok(_) => return user_menu(s, &name),
            Err(Error::UserNotFound(_)) => error(s, format!("{name} is not online")),
            Err(e @ Error::InvalidUsername(_)) => error(s, e.to_string()),
            Err(e) => {
                error(s, format!("cannot look up {name}: {e}"));
                return Ok(());
            }
        }
    }
}

/// What a user action ended with.
enum Next {
    Stay,
    /// The user went offline: back to the main menu.
    Gone,
}

fn user_menu(s: &mut Session, name: &str) -> Result<(), Quit> {
    loop {
        let heading = s.style.bold(&format!("Selected user: {}", visible(name)));
        let menu = format!(
            "\n{heading}\n1. View IP/Port\n2. View Filenames\n3. Chat\n4. Fetch File\n0. Back"
        );
        let choice = s.choose(&menu, "Enter choice: ")?;
        let next = match choice.as_str() {
            "1" => view_address(s, name),
            "2" => view_files(s, name),
            "3" => {
                s.request_chat(name)?;
                Next::Stay
            }
            "4" => fetch(s, name)?,
            "0" => return Ok(()),
            "" => Next::Stay,
            other => {
                invalid(s, other, "0-4");
                Next::Stay
            }
        };
        if let Next::Gone = next {
            return Ok(());
        }
    }
}

/// Report a failed action on `name`; whether they are gone.
fn failed(s: &mut Session, name: &str, what: &str, e: Error) -> Next {
    if let Error::UserNotFound(_) = e {
        error(s, format!("{name} is no longer online"));
        Next::Gone
    } else {
        s.warn_key(&e);
        error(s, format!("{what}: {e}"));
        Next::Stay
    }
}

fn view_address(s: &mut Session, name: &str) -> Next {
    match s.peer.peer_info(name) {
        Ok(info) => {
            s.say(format!(
                "{} is at IP {} port {}{}",
                visible(name),
                info.addr.ip(),
                info.addr.port(),
                if info.legacy && !s.peer.registry_is_legacy() {
                    " (an original client)"
                } else {
                    ""
                }
            ));
            let listed = crate::keys::listed_key(&info, s.peer.registry_is_legacy());
            let yours = if name == s.peer.username() {
                format!(" (you; your own key is {})", s.peer.fingerprint())
            } else {
                String::new()
            };
            let line = if info.key.is_some() {
                format!("{}'s {listed}{yours}", visible(name))
            } else {
                format!("{} has {listed}{yours}", visible(name))
            };
            let line = if info.key.is_some() {
                line
            } else {
                s.style.yellow(&line)
            };
            s.say(line);
            let conflict =
                crate::keys::pin_conflict(s.keys.file.as_deref(), &s.keys.registry, name, info.key);
            if let Some(w) = conflict {
                let w = s.style.red(&w);
                s.say(w);
            }
            Next::Stay
        }
        Err(e) => failed(s, name, "cannot look up the address", e),
    }
}

fn view_files(s: &mut Session, name: &str) -> Next {
    match s.peer.files_of(name) {
        Ok(files) if files.is_empty() => {
            s.say(format!("{} shares no files", visible(name)));
            Next::Stay
        }
        Ok(files) => {
            s.say(format!(
                "Files shared by {} ({}):",
                visible(name),
                files.len()
            ));
            for f in files {
                s.say(format!("  {}", visible(&f)));
            }
            Next::Stay
        }
        Err(e) => failed(s, name, "cannot list the files", e),
    }
}

fn fetch(s: &mut Session, name: &str) -> Result<Next, Quit> {
    // Filenames are taken as typed (only the line ending is removed): a shared name may
    // start or end with spaces.
    let file = s.read_raw("Enter filename (empty to go back): ")?;
    if file.is_empty() {
        return Ok(Next::Stay);
    }
    s.say(format!(
        "fetching {} from {}...",
        visible(&file),
        visible(name)
    ));
    let starts = s.starts();
    let result = s.peer.fetch(name, &file).and_then(|t| {
        // No prompt is open here (the "fetching" line ended it): a plain line. A failed
        // write shows at the next prompt.
        crate::progress::watch(&t, &s.signals, &starts, &mut |line| {
            let _ = crate::output::line(line);
        })
        .map(|p| (p, t.is_verified()))
    });
    Ok(match result {
        Ok((path, verified)) => {
            let line = s.style.green(&format!(
                "saved {} ({})",
                visible(&path.display().to_string()),
                if verified {
                    "hash verified"
                } else {
                    "unverified: original client, no hash"
                }
            ));
            s.say(line);
            Next::Stay
        }
        Err(Error::Cancelled) => {
            let partial = p2pcore::transfer::partial_path(s.peer.download_dir(), &file);
            let kept = std::fs::metadata(&partial).map_or(0, |m| m.len());
            if kept > 0 {
                error(
                    s,
                    format!(
                        "download cancelled; the partial file ({}) is kept: fetching it again resumes it",
                        crate::progress::bytes(kept)
                    ),
                );
            } else {
                error(
                    s,
                    "download cancelled before any of the file arrived".into(),
                );
            }
            Next::Stay
        }
        Err(e) => failed(s, name, "fetch failed", e),
    })
}
