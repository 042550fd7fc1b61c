//! `p2pchat client`: registration prompts, then the interactive menu.
//!
//! One thread reads stdin ([`input`]); the peer's hooks feed bounded queues
//! ([`events`]); the main loop ([`session`]) waits on both and on signals, and asks
//! about chat requests at the menu, one at a time.

mod events;
mod input;
mod menu;
mod prompt;
mod session;

use crate::args::ClientArgs;
use crate::failure::Failure;
use crate::output::EXIT_OUTPUT_CLOSED;
use crate::style::Style;
use crate::visible::visible;
use std::time::Duration;

/// Why the client stops before Exit was chosen.
#[derive(Debug)]
pub enum Quit {
    /// End of input (Ctrl-D at the menu, a closed pipe).
    Eof,
    /// SIGINT or SIGTERM.
    Signal,
    /// stdout failed (its reader went away: EPIPE); the error text. The client leaves
    /// the registry and exits with [`EXIT_OUTPUT_CLOSED`].
    Output(String),
}

impl From<std::io::Error> for Quit {
    fn from(e: std::io::Error) -> Quit {
        Quit::Output(e.to_string())
    }
}

/// Exit code after SIGINT/SIGTERM.
const EXIT_SIGNAL: i32 = 130;

/// Run the interactive client.
///
/// Exit codes: 0 after Exit or end of input, 1 when registration cannot succeed,
/// [`EXIT_SIGNAL`] after SIGINT/SIGTERM, [`EXIT_OUTPUT_CLOSED`] when stdout was closed
/// (a pipe whose reader went away). Once registered, the client sends EXIT to the
/// registry on every one of these paths.
pub fn run(args: ClientArgs) -> Result<(), Failure> {
    let style = Style::stdout();
    let signals = crate::signals::channel();
    let input = input::Input::start();
    let queues = events::Queues::new();
    let answer_timeout = Duration::from_secs(args.answer_timeout.max(1));
    let repeat_window = Duration::from_secs(args.repeat_window);
    let registry = args.registry.registry.clone();
    let known_keys = args.registry.known_keys_file();
    let path_policy = args.path;
    let registration = prompt::Registration {
        mode: args.registry.mode(),
        registry: args.registry.registry.clone(),
        user: args.user,
        dir: args.dir,
        port: args.port,
        listen: args.listen,
        identity: args.identity,
        known_keys_given: args.registry.known_keys.clone(),
        known_keys: known_keys.clone(),
    };
    let keys = session::Keys {
        registry: registry.clone(),
        given: args.registry.known_keys.clone(),
        file: known_keys,
    };
    // Live share: files added to the folder while online are announced (issue 16).
    let hooks = |b: p2pcore::peer::PeerBuilder| {
        queues.wire(
            args.serving
                .apply(b)
                .chat_answer_timeout(answer_timeout)
                .live_share(true)
                .path_policy(path_policy),
            &keys,
        )
    };
    let peer = match prompt::register(registration, &input, &signals, &style, &hooks) {
        Ok(Ok(peer)) => peer,
        Ok(Err(failure)) => return Err(failure),
        Err(Quit::Eof) => return Err(Failure::new("input ended before registration")),
        Err(Quit::Signal) => {
            return Err(Failure {
                code: EXIT_SIGNAL,
                message: "interrupted".into(),
            })
        }
        Err(Quit::Output(e)) => {
            return Err(Failure {
                code: EXIT_OUTPUT_CLOSED,
                message: format!("cannot write to stdout ({e}) before registration"),
            })
        }
    };
    let registered = style.green(&format!(
        "registered as {} (listening on port {}, sharing {}: {})",
        visible(peer.username()),
        peer.listen_addr().port(),
        visible(&peer.shared_dir().display().to_string()),
        match peer.shared_files().len() {
            1 => "1 file".to_string(),
            n => format!("{n} files"),
        }
    ));
    let own_key = crate::keys::own_key(&peer);
    let status = crate::keys::registry_status(&peer, &registry);
    let unencrypted = peer.registry_key().is_none();
    let mut session = session::Session::new(
        peer,
        style,
        input,
        signals,
        queues,
        answer_timeout,
        repeat_window,
    )
    .with_keys(keys);
    // A failed write is noticed at the menu prompt that follows it.
    session.say(registered);
    session.say(own_key);
    let status = if unencrypted {
        session.style.yellow(&status)
    } else {
        status
    };
    session.say(status);
    let outcome = menu::main_menu(&mut session);
    let why = match &outcome {
        Ok(()) => "bye",
        Err(Quit::Eof) => "end of input; bye",
        Err(Quit::Signal) => "interrupted; bye",
        // Not shown: stdout is gone (`say` writes nothing more).
        Err(Quit::Output(_)) => "stdout closed",
    };
    if session.registry_down() {
        // Nobody to say goodbye to: the peer stops serving and ends.
        session.say(format!("stopping; the registry is unreachable ({why})"));
    } else {
        session.say(format!("leaving the registry ({why})"));
    }
    session.into_peer().exit();
    match outcome {
        Err(Quit::Signal) => std::process::exit(EXIT_SIGNAL),
        Err(Quit::Output(e)) => Err(Failure {
            code: EXIT_OUTPUT_CLOSED,
            message: format!("cannot write to stdout ({e}); left the registry"),
        }),
        _ => Ok(()),
    }
}
