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
}

/// Exit code after SIGINT/SIGTERM.
const EXIT_SIGNAL: i32 = 130;

/// Run the interactive client.
pub fn run(args: ClientArgs) -> Result<(), Failure> {
    let style = Style::stdout();
    let signals = crate::signals::channel();
    let input = input::Input::start();
    let queues = events::Queues::new();
    let answer_timeout = Duration::from_secs(args.answer_timeout.max(1));
    let repeat_window = Duration::from_secs(args.repeat_window);
    let registration = prompt::Registration {
        mode: args.registry.mode(),
        registry: args.registry.registry,
        user: args.user,
        dir: args.dir,
        port: args.port,
        listen: args.listen,
    };
    let hooks = |b: p2pcore::peer::PeerBuilder| queues.wire(b.chat_answer_timeout(answer_timeout));
    let peer = match prompt::register(registration, &input, &signals, &style, &hooks) {
        Ok(Ok(peer)) => peer,
        Ok(Err(message)) => return Err(Failure::new(message)),
        Err(Quit::Eof) => return Err(Failure::new("input ended before registration")),
        Err(Quit::Signal) => {
            return Err(Failure {
                code: EXIT_SIGNAL,
                message: "interrupted".into(),
            })
        }
    };
    println!(
        "{}",
        style.green(&format!(
            "registered as {} (listening on port {}, sharing {}: {})",
            visible(peer.username()),
            peer.listen_addr().port(),
            visible(&peer.shared_dir().display().to_string()),
            match peer.shared_files().len() {
                1 => "1 file".to_string(),
                n => format!("{n} files"),
            }
        ))
    );
    let mut session = session::Session::new(
        peer,
        style,
        input,
        signals,
        queues,
        answer_timeout,
        repeat_window,
    );
    let outcome = menu::main_menu(&mut session);
    let why = match outcome {
        Ok(()) => "bye",
        Err(Quit::Eof) => "end of input; bye",
        Err(Quit::Signal) => "interrupted; bye",
    };
    session.say(format!("leaving the registry ({why})"));
    session.into_peer().exit();
    match outcome {
        Err(Quit::Signal) => std::process::exit(EXIT_SIGNAL),
        _ => Ok(()),
    }
}
