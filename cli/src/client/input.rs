//! The one stdin reader: a thread that sends each line over a channel, so the client's
//! loop can wait on typed lines, signals and peer events at once.
//!
//! At end of input the thread sends [`Line::Eof`] and waits: the loop may ask it to read
//! on ([`Input::resume`], after Ctrl-D ended only a chat). It never spins on a closed
//! stdin: each further read needs a resume, and each resume is one step of the client.

use crossbeam_channel::{Receiver, Sender};
use std::io::BufRead;

/// One thing read from stdin.
#[derive(Debug)]
pub enum Line {
    /// A line, without its line ending (invalid UTF-8 replaced).
    Text(String),
    /// End of input (Ctrl-D, a closed pipe) or a read error.
    Eof,
}

/// The stdin reader's channel.
pub struct Input {
    lines: Receiver<Line>,
    resume: Sender<()>,
}

impl Input {
    /// Start the reader thread. It ends when the `Input` is dropped (after its current
    /// read, which the process exit interrupts).
    pub fn start() -> Input {
        let (tx, lines) = crossbeam_channel::unbounded();
        let (resume, resumed) = crossbeam_channel::bounded::<()>(1);
        let spawned = std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || read_lines(tx, resumed));
        if let Err(e) = spawned {
            crate::output::err_line(&format!("cannot start the input reader: {e}"));
        }
        Input { lines, resume }
    }

    /// The lines, for `select!`.
    pub fn lines(&self) -> &Receiver<Line> {
        &self.lines
    }

    /// After an [`Line::Eof`], read on (a terminal gives more input after Ctrl-D).
    pub fn resume(&self) {
        let _ = self.resume.try_send(());
    }
}

fn read_lines(tx: Sender<Line>, resumed: Receiver<()>) {
    let stdin = std::io::stdin();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let line = match stdin.lock().read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => Line::Eof,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                Line::Text(String::from_utf8_lossy(&buf).into_owned())
            }
        };
        let eof = matches!(line, Line::Eof);
        if tx.send(line).is_err() {
            return;
        }
        if eof && resumed.recv().is_err() {
            return;
        }
    }
}
