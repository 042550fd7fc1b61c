//! The running client: waits on typed lines, signals and peer events at once, so an
//! incoming chat request can interrupt whatever prompt is showing; answers chat
//! requests and runs chats (during which the menu is disabled).

use super::events::Event;
use super::input::{Input, Line};
use super::prompt::echo;
use super::Quit;
use crate::style::Style;
use crossbeam_channel::{select, Receiver};
use p2pcore::peer::{Chat, ChatClosedBy, ChatRequest, Peer};
use std::io::Write;
use std::time::{Duration, Instant};

/// The client once registered.
pub struct Session {
    pub peer: Peer,
    pub style: Style,
    pub signals: Receiver<()>,
    input: Input,
    events: Receiver<Event>,
    answer_timeout: Duration,
    /// A prompt is on screen without its newline: the next line must start afresh.
    prompt_open: bool,
}

impl Session {
    pub fn new(
        peer: Peer,
        style: Style,
        input: Input,
        signals: Receiver<()>,
        events: Receiver<Event>,
        answer_timeout: Duration,
    ) -> Session {
        Session {
            peer,
            style,
            signals,
            input,
            events,
            answer_timeout,
            prompt_open: false,
        }
    }

    /// Print one line, after closing an open prompt line.
    pub fn say(&mut self, text: impl AsRef<str>) {
        if self.prompt_open {
            println!();
            self.prompt_open = false;
        }
        println!("{}", text.as_ref());
    }

    fn show_prompt(&mut self, prompt: &str) {
        print!("{prompt}");
        let _ = std::io::stdout().flush();
        self.prompt_open = true;
    }

    /// A line that was typed (echoed when stdin is a pipe).
    fn got_line(&mut self, text: &str) {
        echo(text);
        self.prompt_open = false;
    }

    /// Show `prompt` and return the next typed line, trimmed. Events that arrive
    /// meanwhile are handled (a chat request is asked about at once), then the prompt
    /// is shown again.
    pub fn read(&mut self, prompt: &str) -> Result<String, Quit> {
        self.read_after(None, prompt)
    }

    /// Show `menu` and `prompt`, and return the choice typed. A chat request that
    /// interrupts (and perhaps a whole chat) is followed by the menu again, so the
    /// person sees where they are.
    pub fn choose(&mut self, menu: &str, prompt: &str) -> Result<String, Quit> {
        self.say(menu);
        self.read_after(Some(menu), prompt)
    }

    fn read_after(&mut self, menu: Option<&str>, prompt: &str) -> Result<String, Quit> {
        self.show_prompt(prompt);
        loop {
            select! {
                recv(self.input.lines()) -> line => match line {
                    Ok(Line::Text(text)) => {
                        self.got_line(&text);
                        return Ok(text.trim().to_string());
                    }
                    _ => return Err(Quit::Eof),
                },
                recv(self.signals) -> _ => return Err(Quit::Signal),
                recv(self.events) -> event => {
                    if let Ok(event) = event {
                        let was_request = matches!(event, Event::ChatRequest { .. });
                        if self.handle(event)? {
                            if let (true, Some(menu)) = (was_request, menu) {
                                self.say(menu);
                            }
                            self.show_prompt(prompt);
                        }
                    }
                }
            }
        }
    }

    /// Handle an event outside a chat; whether anything was printed.
    fn handle(&mut self, event: Event) -> Result<bool, Quit> {
        match event {
            Event::ChatRequest { request, at } => {
                self.answer(request, at)?;
                Ok(true)
            }
            Event::ChatMessage { from, text, .. } => {
                let line = format!("{}: {text}", self.style.cyan(&from));
                self.say(line);
                Ok(true)
            }
            Event::Notice(text) => {
                let line = self.style.yellow(&text);
                self.say(line);
                Ok(true)
            }
            // A chat that is over, or an expiry already reported by `answer`.
            Event::ChatClosed { .. } | Event::RequestExpired { .. } => Ok(false),
        }
    }

    /// Ask the person whether to accept `request`; run the chat if they do.
    fn answer(&mut self, request: ChatRequest, at: Instant) -> Result<(), Quit> {
        let from = request.from().to_string();
        let deadline = at + self.answer_timeout;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let line = self.style.yellow(&format!(
                "a chat request from {from} expired while you were busy"
            ));
            self.say(line);
            return Ok(());
        }
        let line = self.style.yellow(&format!(
            "*** {from} wants to chat with you (answer within {} s) ***",
            left.as_secs().max(1)
        ));
        self.say(line);
        let prompt = format!("Accept chat with {from}? [y/n]: ");
        self.show_prompt(&prompt);
        // The library declines at the deadline and reports it; the timer is a backstop.
        let backstop = crossbeam_channel::after(left + Duration::from_secs(2));
        loop {
            select! {
                recv(self.input.lines()) -> line => {
                    let text = match line {
                        Ok(Line::Text(text)) => text,
                        _ => {
                            request.decline();
                            return Err(Quit::Eof);
                        }
                    };
                    self.got_line(&text);
                    match text.trim().to_ascii_lowercase().as_str() {
                        "y" | "yes" => {
                            return match request.accept() {
                                Ok(chat) => self.run_chat(chat),
                                Err(_) => {
                                    self.expired(&from);
                                    Ok(())
                                }
                            };
                        }
                        "n" | "no" => {
                            request.decline();
                            self.say(format!("declined the chat request from {from}"));
                            return Ok(());
                        }
                        _ => {
                            self.say("please answer y or n");
                            self.show_prompt(&prompt);
                        }
                    }
                },
                recv(self.signals) -> _ => {
                    request.decline();
                    return Err(Quit::Signal);
                }
                recv(self.events) -> event => match event {
                    Ok(Event::RequestExpired { from: f }) if f == from => {
                        self.expired(&from);
                        return Ok(());
                    }
                    Ok(event) => {
                        if self.side_event(event) {
                            self.show_prompt(&prompt);
                        }
                    }
                    Err(_) => {}
                },
                recv(backstop) -> _ => {
                    self.expired(&from);
                    return Ok(());
                }
            }
        }
    }

    fn expired(&mut self, from: &str) {
        let line = self.style.yellow(&format!(
            "the chat request from {from} expired: no answer in time, so it was declined"
        ));
        self.say(line);
    }

    /// An event while busy with a request or a chat: another request is declined,
    /// everything else shown. Whether anything was printed.
    fn side_event(&mut self, event: Event) -> bool {
        match event {
            Event::ChatRequest { request, .. } => {
                let from = request.from().to_string();
                request.decline();
                let line = self.style.yellow(&format!(
                    "declined a chat request from {from}: you are busy"
                ));
                self.say(line);
                true
            }
            Event::ChatMessage { from, text, .. } => {
                let line = format!("{}: {text}", self.style.cyan(&from));
                self.say(line);
                true
            }
            Event::Notice(text) => {
                let line = self.style.yellow(&text);
                self.say(line);
                true
            }
            Event::ChatClosed { .. } | Event::RequestExpired { .. } => false,
        }
    }

    /// Ask `name` for a chat and run it if they accept.
    pub fn request_chat(&mut self, name: &str) -> Result<(), Quit> {
        if name == self.peer.username() {
            self.say("you cannot chat with yourself");
            return Ok(());
        }
        self.say(format!(
            "asking {name} for a chat; waiting for their answer..."
        ));
        match self.peer.chat(name) {
            Ok(chat) => {
                let line = self.style.green(&format!("{name} accepted the chat"));
                self.say(line);
                self.run_chat(chat)
            }
            Err(p2pcore::Error::Declined(_)) => {
                let line = self.style.red(&format!("{name} declined the chat request"));
                self.say(line);
                Ok(())
            }
            Err(e) => {
                let line = self.style.red(&format!("cannot chat with {name}: {e}"));
                self.say(line);
                Ok(())
            }
        }
    }

    /// A chat: typed lines are sent, incoming ones shown; `/exit` or Ctrl-D ends it.
    fn run_chat(&mut self, chat: Chat) -> Result<(), Quit> {
        let who = chat.peer().to_string();
        let line = self.style.green(&format!(
            "--- chatting with {who}: type a message and press Enter; /exit or Ctrl-D ends the chat ---"
        ));
        self.say(line);
        loop {
            select! {
                recv(self.input.lines()) -> line => match line {
                    Ok(Line::Text(text)) => {
                        self.got_line(&text);
                        if text.trim() == "/exit" {
                            chat.close();
                            self.say(format!("--- chat with {who} ended ---"));
                            return Ok(());
                        }
                        if text.is_empty() {
                            continue;
                        }
                        if let Err(e) = chat.send(&text) {
                            let line = self.style.red(&format!("message not sent: {e}"));
                            self.say(line);
                        }
                    }
                    _ => {
                        chat.close();
                        self.say(format!("--- chat with {who} ended ---"));
                        self.input.resume();
                        return Ok(());
                    }
                },
                recv(self.signals) -> _ => {
                    chat.close();
                    return Err(Quit::Signal);
                }
                recv(self.events) -> event => match event {
                    Ok(Event::ChatMessage { chat: id, from, text }) if id == chat.id() => {
                        let line = format!("{}: {text}", self.style.cyan(&from));
                        self.say(line);
                    }
                    Ok(Event::ChatClosed { chat: id, by }) if id == chat.id() => {
                        let line = match by {
                            ChatClosedBy::Remote => format!("--- {who} ended the chat ---"),
                            ChatClosedBy::Lost => format!("--- the connection to {who} was lost ---"),
                            ChatClosedBy::Local => format!("--- chat with {who} ended ---"),
                        };
                        let line = self.style.red(&line);
                        self.say(line);
                        return Ok(());
                    }
                    Ok(event) => {
                        self.side_event(event);
                    }
                    Err(_) => {}
                },
            }
        }
    }
}
