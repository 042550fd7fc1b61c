//! The running client: waits on typed lines, signals and peer events at once; queues
//! incoming chat requests and file offers and asks about them one at a time; runs
//! chats (during which the menu is disabled, and offers are declined as busy). An
//! accepted file goes into the download directory in the background; a line says when
//! it is there (or why not).
//!
//! A chat request never takes a line meant for another prompt. Requests wait in a
//! queue (at most [`MAX_WAITING_REQUESTS`]) and are asked about only at a menu prompt,
//! never while the person is typing a username or a filename. At a menu, the prompt
//! becomes `Accept chat with NAME? [y/n]: `; only `y`/`yes`/`n`/`no` answer it, and any
//! other line is the menu choice it was typed as (the request is asked again at the
//! next menu prompt). A second request from someone already waiting, or one within
//! `repeat_window` of their last queued one (unless that one was accepted), is declined
//! without asking, with a note: one per person per window, and at most one line per
//! [`NOTE_EVERY`] in all, so requests under ever new names cannot flood the screen.
//!
//! Everything another party supplied (names, messages, error texts) is printed through
//! [`crate::visible`].
//!
//! Output never panics: a failed write to stdout (its reader went away) is remembered,
//! nothing more is written, and the next prompt or chat step ends the session with
//! [`Quit::Output`], so the client still leaves the registry.

use super::events::{ChatLine, Event, Queues};
use super::input::{Input, Line};
use super::prompt::echo;
use super::Quit;
use crate::output;
use crate::style::Style;
use crate::visible::{message, visible};
use crossbeam_channel::{never, select, Receiver};
use p2pcore::peer::{Chat, ChatClosedBy, ChatRequest, FileOffer, Peer};
use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Most chat requests waiting to be asked about (the library holds as many pending by
/// default, `limits::MAX_PENDING_CHAT_REQUESTS`); more are declined.
pub const MAX_WAITING_REQUESTS: usize = 8;
/// Most requesters remembered for the repeat rule; the oldest is forgotten first.
const MAX_REMEMBERED: usize = 1024;
/// At most one line about requests declined without asking per this long.
const NOTE_EVERY: Duration = Duration::from_secs(3);

/// What a waiting request asks: to chat, or to take a file.
enum Ask {
    Chat(ChatRequest),
    File(FileOffer),
}

impl Ask {
    fn is_pending(&self) -> bool {
        match self {
            Ask::Chat(r) => r.is_pending(),
            Ask::File(o) => o.is_pending(),
        }
    }

    fn is_verified(&self) -> bool {
        match self {
            Ask::Chat(r) => r.is_verified(),
            Ask::File(o) => o.is_verified(),
        }
    }

    fn decline(self) {
        match self {
            Ask::Chat(r) => r.decline(),
            Ask::File(o) => {
                o.decline();
            }
        }
    }

    /// What it is, for lines about it.
    fn what(&self) -> &'static str {
        match self {
            Ask::Chat(_) => "chat request",
            Ask::File(_) => "file offer",
        }
    }
}

/// A chat request or file offer waiting for the person.
struct Waiting {
    request: Ask,
    from: String,
    /// The line about the caller's key, or a loud UNVERIFIED mark ([`crate::keys::caller_line`]).
    mark: String,
    deadline: Instant,
    /// Its "wants to chat" line has been shown.
    announced: bool,
}

/// When someone last had a request queued, and whether a refusal was noted since.
struct Recent {
    asked: Instant,
    noted: bool,
}

/// Where keys are pinned, for advice about a changed one and for showing pins.
#[derive(Default)]
pub struct Keys {
    /// The registry as typed (`HOST:PORT`, maybe `#FINGERPRINT`).
    pub registry: String,
    /// `--known-keys` as given (repeated in advice).
    pub given: Option<std::path::PathBuf>,
    /// The known-keys file in use (`None`: pins for this run only).
    pub file: Option<std::path::PathBuf>,
}

/// The client once registered.
pub struct Session {
    /// Where keys are pinned.
    pub keys: Keys,
    pub peer: Peer,
    pub style: Style,
    pub signals: Receiver<()>,
    input: Input,
    queues: Queues,
    answer_timeout: Duration,
    repeat_window: Duration,
    waiting: VecDeque<Waiting>,
    recent: HashMap<String, Recent>,
    /// When the last line about a request declined without asking was shown, and how
    /// many were declined since without a line.
    last_note: Option<Instant>,
    held_notes: u64,
    /// The prompt on screen without its newline, if any: the next line must start
    /// afresh, and the same prompt need not be shown again.
    open_prompt: Option<String>,
    /// Why writing to stdout failed, once it has: nothing more is written, and the
    /// session ends at the next prompt or chat step.
    output_failed: Option<String>,
    /// stdout is a terminal: each line starts by clearing the line the cursor is on.
    terminal: bool,
}

impl Session {
    pub fn new(
        peer: Peer,
        style: Style,
        input: Input,
        signals: Receiver<()>,
        queues: Queues,
        answer_timeout: Duration,
        repeat_window: Duration,
    ) -> Session {
        Session {
            keys: Keys::default(),
            peer,
            style,
            signals,
            input,
            queues,
            answer_timeout,
            repeat_window,
            waiting: VecDeque::new(),
            recent: HashMap::new(),
            last_note: None,
            held_notes: 0,
            open_prompt: None,
            output_failed: None,
            terminal: std::io::stdout().is_terminal(),
        }
    }

    /// This session with `keys` (where keys are pinned).
    pub fn with_keys(mut self, keys: Keys) -> Session {
        self.keys = keys;
        self
    }

    /// Where downloads started (see [`crate::progress::watch`]).
    pub fn starts(&self) -> crate::progress::Starts {
        self.queues.starts.clone()
    }

    /// Whether the registry connection is lost right now.
    pub fn registry_down(&self) -> bool {
        self.queues
            .registry_down
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Give up the peer after releasing every hook that may be waiting on the client
    /// (a chat reader blocked on a full message queue), so `Peer::exit` cannot wait on
    /// a thread that waits on us.
    pub fn into_peer(self) -> Peer {
        let Session {
            peer,
            queues,
            waiting,
            ..
        } = self;
        drop(queues.stop);
        drop(waiting);
        peer
    }

    /// Print one line on a line of its own. A failed write is remembered (see
    /// [`Session::output_ok`]); after one, nothing is written.
    ///
    /// Lines often arrive while the person is typing (a chat message, a request, a
    /// notice): the cursor then sits after a prompt, or after half a line the terminal
    /// echoed, which a line-buffered stdin cannot show us. On a terminal the line is
    /// therefore cleared first (`\r`, erase line) and the waiting loop shows its prompt
    /// again below; what was typed is still in the terminal's line buffer (Enter sends
    /// it whole; Ctrl-R shows it again). Through a pipe an open prompt is just ended
    /// with a line break.
    pub fn say(&mut self, text: impl AsRef<str>) {
        let prompt_open = self.open_prompt.take().is_some();
        if self.terminal {
            self.write(|| output::partial("\r\x1b[K"));
        } else if prompt_open {
            self.write(|| output::line(""));
        }
        self.write(|| output::line(text.as_ref()));
    }

    /// Run one write unless an earlier one failed; remember its failure.
    fn write(&mut self, write: impl FnOnce() -> std::io::Result<()>) {
        if self.output_failed.is_none() {
            if let Err(e) = write() {
                self.output_failed = Some(e.to_string());
            }
        }
    }

    /// `Err(Quit::Output)` once a write to stdout has failed.
    pub fn output_ok(&self) -> Result<(), Quit> {
        match &self.output_failed {
            Some(e) => Err(Quit::Output(e.clone())),
            None => Ok(()),
        }
    }

    /// Lines of a warning (already made visible), in red.
    pub fn warn(&mut self, lines: &[String]) {
        for line in lines {
            let line = self.style.red(line);
            self.say(line);
        }
    }

    /// The warning for a changed key in `e`, if it is one (see [`crate::keys::warning`]).
    pub fn warn_key(&mut self, e: &p2pcore::Error) {
        let lines = crate::keys::warning(&self.keys.registry, self.keys.given.as_deref(), e);
        self.warn(&lines);
    }

    /// A name someone else chose, coloured and made visible.
    pub fn name(&self, name: &str) -> String {
        self.style.cyan(&visible(name))
    }

    fn show_prompt(&mut self, prompt: &str) {
        if self.open_prompt.as_deref() == Some(prompt) {
            return;
        }
        if self.open_prompt.is_some() {
            self.write(|| output::line(""));
        }
        self.write(|| output::partial(prompt));
        self.open_prompt = Some(prompt.to_string());
    }

    /// A line that was typed (echoed when stdin is a pipe).
    fn got_line(&mut self, text: &str) {
        self.write(|| echo(text));
        self.open_prompt = None;
    }

    /// Show `prompt` and return the next typed line, trimmed. Chat requests arriving
    /// meanwhile wait for the next menu; other events are shown, then the prompt again.
    pub fn read(&mut self, prompt: &str) -> Result<String, Quit> {
        self.read_after(None, prompt, true)
    }

    /// Like [`Session::read`], but the line exactly as typed (only its line ending
    /// removed): for filenames, which may start or end with spaces.
    pub fn read_raw(&mut self, prompt: &str) -> Result<String, Quit> {
        self.read_after(None, prompt, false)
    }

    /// Show `menu` and `prompt`, and return the choice typed. Waiting chat requests
    /// are asked about here, one at a time; after a chat the menu is shown again, so the
    /// person sees where they are.
    pub fn choose(&mut self, menu: &str, prompt: &str) -> Result<String, Quit> {
        self.say(menu);
        self.read_after(Some(menu), prompt, true)
    }

    fn read_after(&mut self, menu: Option<&str>, prompt: &str, trim: bool) -> Result<String, Quit> {
        loop {
            self.output_ok()?;
            self.drop_expired();
            let asking = menu.is_some() && !self.waiting.is_empty();
            if asking {
                let question = self.announce_head();
                self.show_prompt(&question);
            } else {
                self.show_prompt(prompt);
            }
            let backstop = match self.waiting.iter().map(|w| w.deadline).min() {
                // The library declines at the deadline and reports it; this is a backstop.
                Some(d) => crossbeam_channel::at(d + Duration::from_secs(1)),
                None => never(),
            };
            select! {
                recv(self.input.lines()) -> line => {
                    let text = match line {
                        Ok(Line::Text(text)) => text,
                        _ => return Err(Quit::Eof),
                    };
                    self.got_line(&text);
                    if !asking {
                        return Ok(if trim { text.trim().to_string() } else { text });
                    }
                    let choice = text.trim().to_string();
                    match yes_or_no(&choice) {
                        Some(true) => {
                            if self.accept_head()? {
                                if let Some(menu) = menu {
                                    self.say(menu);
                                }
                            }
                        }
                        Some(false) => self.decline_head(),
                        // Typed for the menu: the request waits for the next prompt.
                        None => return Ok(choice),
                    }
                },
                recv(self.signals) -> _ => return Err(Quit::Signal),
                recv(self.queues.events) -> event => {
                    if let Ok(event) = event {
                        self.on_event(event);
                    }
                }
                recv(self.queues.messages) -> m => {
                    if let Ok(m) = m {
                        self.show_message(&m);
                    }
                }
                recv(backstop) -> _ => {}
            }
        }
    }

    /// Handle an event outside a chat.
    fn on_event(&mut self, event: Event) {
        match event {
            Event::ChatRequest { request, at } => self.queue_request(Ask::Chat(request), at),
            Event::FileOffer { offer, at } => self.queue_request(Ask::File(offer), at),
            Event::RequestExpired { from } => {
                // Only what is still queued; the rest was reported when it left.
                if self.waiting.iter().any(|w| w.from == from) {
                    self.drop_expired();
                }
            }
            Event::Notice(text) => {
                let line = self.style.yellow(&visible(&text));
                self.say(line);
            }
            Event::Warning(lines) => self.warn(&lines),
            // A chat that is over.
            Event::ChatClosed { .. } => {}
        }
    }

    fn show_message(&mut self, m: &ChatLine) {
        let prefix = format!("{}: ", self.name(&m.from));
        let text = message(&prefix, &m.text);
        self.say(text);
    }

    /// Queue `request`, or decline it: a repeat, or too many waiting.
    fn queue_request(&mut self, request: Ask, at: Instant) {
        let from = match &request {
            Ask::Chat(r) => r.from().to_string(),
            Ask::File(o) => o.from().to_string(),
        };
        let what = request.what();
        let now = Instant::now();
        let repeat = self.waiting.iter().any(|w| w.from == from)
            || self
                .recent
                .get(&from)
                .is_some_and(|r| now.duration_since(r.asked) < self.repeat_window);
        if repeat {
            request.decline();
            let secs = self.repeat_window.as_secs();
            let text = format!(
                "declined a repeated {what} from {} (one request per {secs} s per person is asked about)",
                visible(&from)
            );
            self.note_refusal(&from, text);
            return;
        }
        self.remember(&from, now);
        if self.waiting.len() >= MAX_WAITING_REQUESTS {
            request.decline();
            let text = format!(
                "declined a {what} from {}: {MAX_WAITING_REQUESTS} requests are already waiting",
                visible(&from)
            );
            self.note_refusal(&from, text);
            return;
        }
        let mark = match &request {
            Ask::Chat(r) => {
                crate::keys::caller_line(&from, r.key(), r.is_verified(), r.is_legacy())
            }
            Ask::File(o) => crate::keys::caller_line(&from, o.key(), o.is_verified(), false),
        };
        self.waiting.push_back(Waiting {
            request,
            from,
            mark,
            deadline: at + self.answer_timeout,
            announced: false,
        });
    }

    /// Record that `from` had a request queued now (bounded: the oldest is forgotten).
    fn remember(&mut self, from: &str, now: Instant) {
        if self.recent.len() >= MAX_REMEMBERED {
            let window = self.repeat_window;
            self.recent
                .retain(|_, r| now.duration_since(r.asked) < window);
            if self.recent.len() >= MAX_REMEMBERED {
                if let Some(oldest) = self
                    .recent
                    .iter()
                    .min_by_key(|(_, r)| r.asked)
                    .map(|(k, _)| k.clone())
                {
                    self.recent.remove(&oldest);
                }
            }
        }
        self.recent.insert(
            from.to_string(),
            Recent {
                asked: now,
                noted: false,
            },
        );
    }

    /// Show an automatic refusal of `from`: at most once per person per repeat window,
    /// and at most one such line per [`NOTE_EVERY`] in all (requests under ever new
    /// names must not flood the screen); the ones held back are counted in the next.
    fn note_refusal(&mut self, from: &str, text: String) {
        let now = Instant::now();
        let fresh = match self.recent.get_mut(from) {
            Some(r) if r.noted => false,
            Some(r) => {
                r.noted = true;
                true
            }
            None => {
                self.remember(from, now);
                if let Some(r) = self.recent.get_mut(from) {
                    r.noted = true;
                }
                true
            }
        };
        if !fresh {
            return;
        }
        if self
            .last_note
            .is_some_and(|at| now.duration_since(at) < NOTE_EVERY)
        {
            self.held_notes += 1;
            return;
        }
        let text = match std::mem::take(&mut self.held_notes) {
            0 => text,
            1 => format!("{text} (and 1 more declined without asking)"),
            n => format!("{text} (and {n} more declined without asking)"),
        };
        self.last_note = Some(now);
        let line = self.style.yellow(&text);
        self.say(line);
    }

    /// Remove requests that can no longer be answered, saying so.
    fn drop_expired(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.waiting.len() {
            let w = &self.waiting[i];
            if w.request.is_pending() && w.deadline > now {
                i += 1;
                continue;
            }
            if let Some(w) = self.waiting.remove(i) {
                let what = w.request.what();
                let text = if w.announced {
                    format!(
                        "the {what} from {} expired: no answer in time, so it was declined",
                        visible(&w.from)
                    )
                } else {
                    format!(
                        "a {what} from {} expired while you were busy",
                        visible(&w.from)
                    )
                };
                let line = self.style.yellow(&text);
                self.say(line);
            }
        }
    }

    /// Show the first waiting request's line once; return its question.
    fn announce_head(&mut self) -> String {
        let Some(head) = self.waiting.front() else {
            return String::new();
        };
        let from = visible(&head.from).into_owned();
        if !head.announced {
            let left = head.deadline.saturating_duration_since(Instant::now());
            // Rounded up: a request shown the moment it arrived has the whole timeout.
            let secs = left.as_millis().div_ceil(1000).max(1);
            let mark = format!("    {}", head.mark);
            let mark = if head.request.is_verified() {
                mark
            } else {
                self.style.red(&mark)
            };
            let wants = match &head.request {
                Ask::Chat(_) => "wants to chat with you".to_string(),
                Ask::File(o) => format!(
                    "offers you the file {} ({})",
                    visible(o.name()),
                    crate::progress::bytes(o.size())
                ),
            };
            let line = self.style.yellow(&format!(
                "*** {from} {wants} (answer within {secs} s; menu choices still work) ***"
            ));
            self.say(line);
            self.say(mark);
            if let Some(head) = self.waiting.front_mut() {
                head.announced = true;
            }
        }
        match self.waiting.front().map(|w| &w.request) {
            Some(Ask::File(o)) => {
                format!("Accept the file {} from {from}? [y/n]: ", visible(o.name()))
            }
            _ => format!("Accept chat with {from}? [y/n]: "),
        }
    }

    /// Accept file offer `offer` (from `from`) into the download directory; its end is
    /// reported as a notice.
    fn accept_file(&mut self, offer: FileOffer, from: &str) {
        let name = visible(offer.name()).into_owned();
        let accepted = {
            // Held while the id is noted, so the transfer's end cannot be missed.
            let mut incoming = self
                .queues
                .incoming
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            offer.accept().inspect(|t| {
                incoming.insert(t.id());
            })
        };
        match accepted {
            Ok(_) => {
                self.recent.remove(from);
                let line = self.style.green(&format!(
                    "receiving {name} from {} into {}; a line says when it is here",
                    visible(from),
                    visible(&self.peer.download_dir().display().to_string())
                ));
                self.say(line);
            }
            Err(e) => {
                offer.decline();
                let line = self.style.red(&format!(
                    "cannot take {name}: {}; declined",
                    visible(&e.to_string())
                ));
                self.say(line);
            }
        }
    }

    /// Accept the first waiting request and run the chat; whether a chat ran.
    fn accept_head(&mut self) -> Result<bool, Quit> {
        let Some(w) = self.waiting.pop_front() else {
            return Ok(false);
        };
        let request = match w.request {
            Ask::Chat(r) => r,
            Ask::File(offer) => {
                self.accept_file(offer, &w.from);
                return Ok(false);
            }
        };
        match request.accept() {
            Ok(chat) => {
                if let Some(warning) = crate::keys::unsecured_chat(&chat) {
                    let warning = self.style.red(&warning);
                    self.say(warning);
                }
                // Someone the person chose to talk to may ask again at once.
                self.recent.remove(&w.from);
                self.run_chat(chat)?;
                Ok(true)
            }
            Err(_) => {
                let line = self.style.yellow(&format!(
                    "the chat request from {} expired: no answer in time, so it was declined",
                    visible(&w.from)
                ));
                self.say(line);
                Ok(false)
            }
        }
    }

    fn decline_head(&mut self) {
        if let Some(w) = self.waiting.pop_front() {
            let what = w.request.what();
            w.request.decline();
            let text = format!("declined the {what} from {}", visible(&w.from));
            self.say(text);
        }
    }

    /// Ask `name` for a chat and run it if they accept.
    pub fn request_chat(&mut self, name: &str) -> Result<(), Quit> {
        let shown = visible(name).into_owned();
        if name == self.peer.username() {
            self.say("you cannot chat with yourself");
            return Ok(());
        }
        self.say(format!(
            "asking {shown} for a chat; waiting for their answer..."
        ));
        match self.peer.chat(name) {
            Ok(chat) => {
                let line = self.style.green(&if chat.is_legacy() {
                    format!("chat open with {shown} (an original client: it does not say whether it accepted; it closes the chat if not)")
                } else {
                    format!("{shown} accepted the chat")
                });
                self.say(line);
                if let Some(w) = crate::keys::unsecured_chat(&chat) {
                    let w = self.style.red(&w);
                    self.say(w);
                }
                self.run_chat(chat)
            }
            Err(p2pcore::Error::Declined(_)) => {
                let line = self
                    .style
                    .red(&format!("{shown} declined the chat request"));
                self.say(line);
                Ok(())
            }
            Err(e) => {
                self.warn_key(&e);
                let line = self.style.red(&format!(
                    "cannot chat with {shown}: {}",
                    visible(&e.to_string())
                ));
                self.say(line);
                Ok(())
            }
        }
    }

    /// Show the messages still queued when a chat ends: its reader queued them
    /// before reporting the end, so they belong before the end line.
    fn drain_messages(&mut self) {
        let queued: Vec<ChatLine> = self.queues.messages.try_iter().collect();
        for m in &queued {
            self.show_message(m);
        }
    }

    /// A chat: typed lines are sent, incoming ones shown; `/exit` or Ctrl-D ends it.
    /// Other chat requests meanwhile are declined (noted once per person per window).
    fn run_chat(&mut self, chat: Chat) -> Result<(), Quit> {
        let who = visible(chat.peer()).into_owned();
        let line = self.style.green(&format!(
            "--- chatting with {who}: type a message and press Enter; /exit or Ctrl-D ends the chat ({} link) ---",
            chat.path()
        ));
        self.say(line);
        // Its end is reported by an event; should that event have been dropped (a full
        // queue), the chat's own flag says so on the next tick but one.
        let tick = crossbeam_channel::tick(Duration::from_millis(500));
        let mut closed_ticks = 0;
        loop {
            if let Err(quit) = self.output_ok() {
                chat.close();
                return Err(quit);
            }
            select! {
                recv(self.input.lines()) -> line => match line {
                    Ok(Line::Text(text)) => {
                        self.got_line(&text);
                        if text.trim() == "/exit" {
                            chat.close();
                            self.drain_messages();
                            self.say(format!("--- chat with {who} ended ---"));
                            return Ok(());
                        }
                        if text.is_empty() {
                            continue;
                        }
                        if let Err(e) = chat.send(&text) {
                            let line = self
                                .style
                                .red(&format!("message not sent: {}", visible(&e.to_string())));
                            self.say(line);
                        }
                    }
                    _ => {
                        chat.close();
                        self.drain_messages();
                        self.say(format!("--- chat with {who} ended ---"));
                        self.input.resume();
                        return Ok(());
                    }
                },
                recv(self.signals) -> _ => {
                    chat.close();
                    return Err(Quit::Signal);
                }
                recv(self.queues.messages) -> m => {
                    if let Ok(m) = m {
                        self.show_message(&m);
                    }
                }
                recv(self.queues.events) -> event => match event {
                    Ok(Event::ChatClosed { chat: id, by }) if id == chat.id() => {
                        self.drain_messages();
                        let line = match by {
                            ChatClosedBy::Remote => format!("--- {who} ended the chat ---"),
                            ChatClosedBy::Lost => format!("--- the connection to {who} was lost ---"),
                            ChatClosedBy::Local => format!("--- chat with {who} ended ---"),
                        };
                        let line = self.style.red(&line);
                        self.say(line);
                        return Ok(());
                    }
                    Ok(Event::ChatRequest { request, .. }) => {
                        let from = request.from().to_string();
                        request.decline();
                        let text = format!(
                            "declined a chat request from {}: you are busy",
                            visible(&from)
                        );
                        self.note_refusal(&from, text);
                    }
                    Ok(Event::FileOffer { offer, .. }) => {
                        let from = offer.from().to_string();
                        offer.decline();
                        let text = format!(
                            "declined a file offer from {}: you are busy chatting",
                            visible(&from)
                        );
                        self.note_refusal(&from, text);
                    }
                    Ok(event) => self.on_event(event),
                    Err(_) => {}
                },
                recv(tick) -> _ => {
                    if chat.is_closed() {
                        closed_ticks += 1;
                        if closed_ticks >= 2 {
                            self.drain_messages();
                            let line = self.style.red(&format!("--- chat with {who} ended ---"));
                            self.say(line);
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}

/// `Some(true)` for yes, `Some(false)` for no, `None` for anything else.
fn yes_or_no(answer: &str) -> Option<bool> {
    match answer.to_ascii_lowercase().as_str() {
        "y" | "yes" => Some(true),
        "n" | "no" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::yes_or_no;

    #[test]
    fn only_yes_and_no_answer_a_chat_request() {
        for y in ["y", "Y", "yes", "YES"] {
            assert_eq!(yes_or_no(y), Some(true));
        }
        for n in ["n", "No"] {
            assert_eq!(yes_or_no(n), Some(false));
        }
        for other in ["", "1", "0", "bob", "yy", "report.bin"] {
            assert_eq!(yes_or_no(other), None, "{other:?}");
        }
    }
}
