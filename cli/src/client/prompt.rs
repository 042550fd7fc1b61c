//! Registration prompts, as the original asked them: username (checked with the
//! registry), shared directory (must exist), port (must be free). Whatever was not
//! given as a flag is asked for; whatever fails is asked for again.

use super::input::{Input, Line};
use super::Quit;
use crate::failure::{failure_at, registry_failure, Failure};
use crate::output;
use crate::style::Style;
use crate::visible::visible;
use crossbeam_channel::Receiver;
use p2pcore::peer::{username_available_with, Peer, PeerBuilder};
use p2pcore::Error;
use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::PathBuf;

/// Print `prompt` and wait for one line (trimmed), end of input, or a signal. When
/// stdin is not a terminal the line is echoed, so a transcript reads like a session.
/// A failed write to stdout ends the prompt with [`Quit::Output`].
pub fn ask(input: &Input, signals: &Receiver<()>, prompt: &str) -> Result<String, Quit> {
    output::partial(prompt)?;
    crossbeam_channel::select! {
        recv(input.lines()) -> line => match line {
            Ok(Line::Text(text)) => {
                echo(&text)?;
                Ok(text.trim().to_string())
            }
            _ => {
                output::line("")?;
                Err(Quit::Eof)
            }
        },
        recv(signals) -> _ => {
            output::line("")?;
            Err(Quit::Signal)
        }
    }
}

/// Show a line read from a pipe (a terminal already echoed it).
pub fn echo(text: &str) -> std::io::Result<()> {
    if std::io::stdin().is_terminal() {
        return Ok(());
    }
    output::line(text)
}

/// What registration needs; `None` fields are prompted for.
pub struct Registration {
    pub registry: String,
    pub user: Option<String>,
    pub dir: Option<PathBuf>,
    pub port: Option<u16>,
    /// The IP to listen on (`--listen`); `None` leaves it to the library.
    pub listen: Option<IpAddr>,
    /// How to talk to the registry (`--legacy-registry`).
    pub mode: p2pcore::peer::RegistryMode,
    /// The key file (`--identity`); `None`: the username's default one.
    pub identity: Option<PathBuf>,
    /// `--known-keys` as given (repeated in advice about a changed key).
    pub known_keys_given: Option<PathBuf>,
    /// The known-keys file in use (`None`: pins for this run only).
    pub known_keys: Option<PathBuf>,
}

/// Prompt for what is missing and connect; on a field's error, ask for it again.
/// `hooks` installs the client's hooks on each attempt's builder. Errors that no
/// answer can fix (registry unreachable, a changed registry key) are returned as the
/// command's failure.
pub fn register(
    mut reg: Registration,
    input: &Input,
    signals: &Receiver<()>,
    style: &Style,
    hooks: &dyn Fn(PeerBuilder) -> PeerBuilder,
) -> Result<Result<Peer, Failure>, Quit> {
    let given = reg.known_keys_given.clone();
    // Texts may quote the registry's answers: never raw.
    let complain = |text: String| output::line(&style.red(&visible(&text)));
    loop {
        let user = match reg.user.take() {
            Some(u) => u,
            None => ask(input, signals, "Enter username: ")?,
        };
        match username_available_with(&reg.registry, &user, reg.mode) {
            Ok(true) => {}
            Ok(false) => {
                complain(format!("username {user:?} is taken; choose another"))?;
                continue;
            }
            Err(e @ Error::InvalidUsername(_)) => {
                complain(e.to_string())?;
                continue;
            }
            Err(e) => return Ok(Err(registry_failure(&reg.registry, given.as_deref(), &e))),
        }
        let dir = loop {
            let dir = match reg.dir.take() {
                Some(d) => d,
                None => crate::args::expand_home(&ask(input, signals, "Enter shared directory: ")?),
            };
            if dir.as_os_str().is_empty() {
                complain("please enter a directory".into())?;
            } else if dir.is_dir() {
                break dir;
            } else {
                complain(format!("{} is not a directory", dir.display()))?;
            }
        };
        let port = loop {
            let port = match reg.port.take() {
                Some(p) => p,
                None => {
                    let text = ask(
                        input,
                        signals,
                        "Enter port (empty or 0 for any free port): ",
                    )?;
                    if text.is_empty() {
                        0
                    } else {
                        match text.parse::<u16>() {
                            Ok(p) => p,
                            Err(_) => {
                                complain(format!("{text:?} is not a port number (0-65535)"))?;
                                continue;
                            }
                        }
                    }
                }
            };
            match port_free(reg.listen, port) {
                Ok(()) => break port,
                Err(e) => complain(format!("port {port} is not available: {e}"))?,
            }
        };
        let mut builder = Peer::builder(&reg.registry, &user, &dir)
            .port(port)
            .registry_mode(reg.mode);
        if let Some(ip) = reg.listen {
            builder = builder.listen_ip(ip);
        }
        if let Some(file) = &reg.identity {
            builder = builder.identity_file(file);
        }
        if let Some(file) = &reg.known_keys {
            builder = builder.known_keys_file(file);
        }
        let builder = hooks(builder);
        match builder.connect() {
            Ok(peer) => return Ok(Ok(peer)),
            Err(e @ (Error::UsernameTaken(_) | Error::InvalidUsername(_))) => {
                complain(e.to_string())?;
                (reg.dir, reg.port) = (Some(dir), Some(port));
            }
            Err(e @ Error::NotADirectory(_)) => {
                complain(e.to_string())?;
                (reg.user, reg.port) = (Some(user), Some(port));
            }
            Err(e @ Error::PortUnavailable { .. }) => {
                complain(e.to_string())?;
                (reg.user, reg.dir) = (Some(user), Some(dir));
            }
            Err(e) => return Ok(Err(failure_at(&reg.registry, given.as_deref(), e))),
        }
    }
}

/// Whether `port` can be listened on now on `ip` (every interface when not given; 0
/// always can).
fn port_free(ip: Option<IpAddr>, port: u16) -> std::io::Result<()> {
    if port != 0 {
        TcpListener::bind((ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), port))?;
    }
    Ok(())
}
