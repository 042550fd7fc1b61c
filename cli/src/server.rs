//! `p2pchat server`: the registry in the foreground, one log line per event.
//!
//! The log must never hold the registry up nor grow without bound. The registry's
//! hook only offers each event to a bounded queue ([`LOG_QUEUE`]) and counts what did
//! not fit; a printer thread writes the lines and, once it has caught up (or at least
//! every [`DROP_NOTE_EVERY`] while it is behind), says how many were dropped. The main
//! thread only waits for a signal, so Ctrl-C works even when stdout is stalled.

use crate::args::{
    LogFormat, OnOff, ReleaseNameArgs, ServerAction, ServerArgs, ServerLogArgs, Show,
};
use crate::failure::Failure;
use crate::style::{clock, Style};
use crate::visible::{json_string, visible};
use crossbeam_channel::{Receiver, TrySendError};
use p2pcore::identity::Fingerprint;
use p2pcore::registry::{
    release_name, EmbeddedRelay, EventTail, Registry, RegistryConfig, RegistryEvent, StoreSpec,
    TailFrom,
};
use p2pcore::relay::{RelayAddr, RelayEvent, RelayOffer};
use p2pcore::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most events waiting to be printed. Each is at most a few hundred bytes (the registry
/// cuts queries to 200 and outcomes to 120 bytes), so the queue stays near 1-2 MB.
pub const LOG_QUEUE: usize = 4096;
/// While the printer is behind, how often it reports the dropped count anyway.
pub const DROP_NOTE_EVERY: Duration = Duration::from_secs(1);
/// How long the shutdown waits for the printer to write what is left.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// Run the registry until SIGINT/SIGTERM; then exit status 130, like every command a
/// signal stops (the log's "registry stopped" line says it stopped).
pub fn run(args: &ServerArgs) -> Result<(), Failure> {
    match &args.action {
        Some(ServerAction::ReleaseName(a)) => return release(a, args.data_dir.as_deref()),
        Some(ServerAction::Log(a)) => return view(a),
        None => {}
    }
    let redis_url = match &*args.store {
        StoreSpec::Redis(url) => Some(url.clone()),
        StoreSpec::Memory => None,
    };
    if args.show == Show::All && redis_url.is_none() {
        return Err(Failure {
            code: crate::failure::EXIT_USAGE,
            message: "--show all shows the nodes sharing a --store redis://…: give one".into(),
        });
    }
    let data_dir = if args.ephemeral {
        None
    } else {
        Some(data_dir(args.data_dir.as_deref())?)
    };
    let signals = crate::signals::channel();
    let log = Log {
        style: Style::stdout(),
        format: args.log_format,
    };
    let quiet = args.quiet;
    let (tx, queue) = crossbeam_channel::bounded::<Logged>(LOG_QUEUE);
    // Dropping `stop_tx` tells the printer to write what is queued and end.
    let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
    let dropped = Arc::new(AtomicU64::new(0));
    let offer = LogOffer::new(tx.clone(), dropped.clone(), quiet);
    // With `--show all`, this node's lines carry its id too (known once bound; an
    // event before that is printed untagged).
    let own_tag: Arc<std::sync::OnceLock<Arc<str>>> = Arc::default();
    let show_all = args.show == Show::All;
    let tag = own_tag.clone();
    // Runs on the registry's event-loop threads: never blocks.
    let hook = move |e: &RegistryEvent| match tag.get().filter(|_| show_all) {
        Some(node) => offer.offer(&(node.clone(), e.clone()), Logged::node),
        None => offer.offer(e, Logged::Registry),
    };
    let other_nodes = LogOffer::new(tx.clone(), dropped.clone(), quiet);
    let notes = tx.clone();
    let relay_hook = LogOffer::new(tx, dropped.clone(), quiet);
    let mut config = config(args, data_dir.clone());
    relay_setting(args, &mut config)?;
    let registry = Registry::builder()
        .config(config)
        .on_event(hook)
        .on_relay_event(move |e: &RelayEvent| relay_hook.offer(e, Logged::Relay))
        .bind(&args.addr)
        .map_err(|e| match (&e, &data_dir) {
            (Error::Busy(_), Some(dir)) => Failure::new(format!(
                "another registry is running with the data directory {} (its claims store is locked); stop it or give another --data-dir",
                dir.display()
            )),
            _ => Failure::new(format!("cannot start the registry on {}: {e}", args.addr)),
        })?;
    let addr = registry.local_addr();
    let key = registry.fingerprint();
    let node = registry.node_id();
    if let Some(n) = &node {
        let _ = own_tag.set(Arc::from(n.as_str()));
    }
    let relay = match (registry.relay_addr(), &args.relay_at) {
        (Some(at), _) => Some((true, at.to_string())),
        (None, Some(at)) => Some((false, at.clone())),
        (None, None) => None,
    };
    let mut startup = log.listening(addr, key, relay.as_ref().map(|(e, a)| (*e, a.as_str())));
    if let Some(n) = &node {
        log.add_node(&mut startup, n);
    }
    let stopped = log.stopped("registry");
    let (done_tx, done) = crossbeam_channel::bounded::<()>(1);
    let printer = std::thread::Builder::new()
        .name("log".into())
        .spawn(move || {
            print_loop(&log, &startup, &stopped, &queue, &stop, &dropped);
            let _ = done_tx.send(());
        })
        .map_err(|e| Failure::new(format!("cannot start the log printer: {e}")))?;
    // `--show all`: the other nodes' events, from the store's event stream.
    let tail_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tail = match (&redis_url, &node) {
        (Some(url), Some(own)) if show_all => {
            let own = own.clone();
            let stop = tail_stop.clone();
            let url = url.clone();
            let t = std::thread::Builder::new()
                .name("log-nodes".into())
                .spawn(move || {
                    follow(None, &url, TailFrom::Now, &stop, |e| {
                        if e.node != own {
                            other_nodes.offer(&(Arc::from(e.node.as_str()), e.event), Logged::node);
                        }
                    })
                })
                .map_err(|e| Failure::new(format!("cannot start the node log: {e}")))?;
            Some(t)
        }
        _ => None,
    };
    // Wait for a signal; with Redis, say when events could not be shared with the
    // other nodes (at most once a second).
    let mut unpublished = 0;
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
        signals.recv_timeout(Duration::from_secs(1))
    {
        let now = registry.events_unpublished();
        if now > unpublished
            && notes
                .try_send(Logged::Unpublished(now - unpublished))
                .is_ok()
        {
            unpublished = now;
        }
    }
    drop(notes);
    // Joins the event loops and the relay: no event comes after this.
    registry.shutdown();
    tail_stop.store(true, Ordering::SeqCst);
    if let Some(t) = tail {
        let _ = t.join();
    }
    drop(stop_tx);
    // A stalled stdout must not keep the process alive: give the printer a moment to
    // write what is left, and otherwise leave it to the process exit.
    if done.recv_timeout(FINAL_FLUSH).is_ok() {
        let _ = printer.join();
    }
    Err(Failure::interrupted(""))
}

/// Follows every node's events until `stop`: each to `f`. While Redis is away, retries
/// every half second (the tail keeps its place).
fn follow(
    mut tail: Option<EventTail>,
    url: &str,
    from: TailFrom,
    stop: &std::sync::atomic::AtomicBool,
    mut f: impl FnMut(p2pcore::registry::NodeEvent),
) {
    while !stop.load(Ordering::SeqCst) {
        let t = match &mut tail {
            Some(t) => t,
            None => match EventTail::open(url, from) {
                Ok(t) => tail.insert(t),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            },
        };
        match t.next_batch(Duration::from_millis(300)) {
            Ok(events) => events.into_iter().for_each(&mut f),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// `p2pchat server log --store redis://…`: every node's events, until SIGINT/SIGTERM.
fn view(a: &ServerLogArgs) -> Result<(), Failure> {
    let StoreSpec::Redis(url) = &*a.store else {
        return Err(Failure {
            code: crate::failure::EXIT_USAGE,
            message: "p2pchat server log follows the nodes sharing a --store redis://…".into(),
        });
    };
    let signals = crate::signals::channel();
    let log = Log {
        style: Style::stdout(),
        format: a.log_format,
    };
    // Fails now when Redis cannot be reached (later outages are waited out).
    // Opened here, so that whatever is published after the first line is shown.
    let first = EventTail::open(url, TailFrom::Last(a.last))
        .map_err(|e| Failure::new(format!("cannot follow the registry's events: {e}")))?;
    let (tx, queue) = crossbeam_channel::bounded::<Logged>(LOG_QUEUE);
    let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
    let dropped = Arc::new(AtomicU64::new(0));
    let offer = LogOffer::new(tx, dropped.clone(), a.quiet);
    let startup = match a.log_format {
        LogFormat::Text => format!("following the registry nodes' events in {url}"),
        LogFormat::Json => json_line(SystemTime::now(), "following", &[("store", Json::Str(url))]),
    };
    let stopped = log.stopped("log");
    let tail_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (url, from, ts) = (url.clone(), TailFrom::Last(a.last), tail_stop.clone());
    let tail = std::thread::Builder::new()
        .name("log-nodes".into())
        .spawn(move || {
            follow(Some(first), &url, from, &ts, |e| {
                offer.offer(&(Arc::from(e.node.as_str()), e.event), Logged::node)
            })
        })
        .map_err(|e| Failure::new(format!("cannot start the node log: {e}")))?;
    let (done_tx, done) = crossbeam_channel::bounded::<()>(1);
    let printer = std::thread::Builder::new()
        .name("log".into())
        .spawn(move || {
            print_loop(&log, &startup, &stopped, &queue, &stop, &dropped);
            let _ = done_tx.send(());
        })
        .map_err(|e| Failure::new(format!("cannot start the log printer: {e}")))?;
    let _ = signals.recv();
    tail_stop.store(true, Ordering::SeqCst);
    let _ = tail.join();
    drop(stop_tx);
    if done.recv_timeout(FINAL_FLUSH).is_ok() {
        let _ = printer.join();
    }
    Err(Failure::interrupted(""))
}

/// The registry's data directory: `--data-dir`, else `$XDG_DATA_HOME/p2pchat/registry`,
/// else `~/.local/share/p2pchat/registry`.
fn data_dir(given: Option<&Path>) -> Result<PathBuf, Failure> {
    if let Some(d) = given {
        return Ok(d.to_path_buf());
    }
    let non_empty = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    if let Some(xdg) = non_empty("XDG_DATA_HOME") {
        return Ok(xdg.join("p2pchat").join("registry"));
    }
    if let Some(home) = non_empty("HOME") {
        return Ok(home.join(".local/share/p2pchat/registry"));
    }
    Err(Failure::new(
        "no data directory: set XDG_DATA_HOME or HOME, or give --data-dir DIR (or --ephemeral)",
    ))
}

/// `p2pchat server release-name NAME`.
fn release(a: &ReleaseNameArgs, parent_dir: Option<&Path>) -> Result<(), Failure> {
    let dir = data_dir(a.data_dir.as_deref().or(parent_dir))?;
    match release_name(&dir, &a.name) {
        Ok(true) => {
            println!("released the claim on {} in {}", visible(&a.name), dir.display());
            Ok(())
        }
        Ok(false) => Err(Failure::new(format!(
            "{} has no claim in {}",
            visible(&a.name),
            dir.display()
        ))),
        Err(Error::Busy(_)) => Err(Failure::new(format!(
            "the registry using {} is running (it holds the claims store locked); stop it, then release the name",
            dir.display()
        ))),
        Err(e) => Err(Failure::new(format!(
            "cannot release {}: {e}",
            visible(&a.name)
        ))),
    }
}

/// The registry's bounds: the defaults, with what was given on the command line.
fn config(args: &ServerArgs, data_dir: Option<PathBuf>) -> RegistryConfig {
    let d = RegistryConfig::default();
    RegistryConfig {
        data_dir,
        claim_ttl: Duration::from_secs(args.claim_ttl_days.saturating_mul(86_400)),
        max_connections: args.max_connections.unwrap_or(d.max_connections),
        max_conns_per_addr: args.max_conns_per_addr.unwrap_or(d.max_conns_per_addr),
        max_users: args.max_users.unwrap_or(d.max_users),
        max_users_per_addr: args.max_users_per_addr.unwrap_or(d.max_users_per_addr),
        queries_per_sec_per_addr: args.queries_per_sec.unwrap_or(d.queries_per_sec_per_addr),
        query_burst_per_addr: args.query_burst.unwrap_or(d.query_burst_per_addr),
        memory_budget: args.memory_budget.unwrap_or(d.memory_budget),
        store: (*args.store).clone(),
        publish_events: args.publish_events == OnOff::On,
        ..d
    }
}

/// The relay setting of `config` from `--relay`, `--relay-port`, `--relay-at` and
/// `--relay-secret-file`.
fn relay_setting(args: &ServerArgs, config: &mut RegistryConfig) -> Result<(), Failure> {
    match (&args.relay, &args.relay_at, &args.relay_secret_file) {
        (OnOff::Off, Some(_), _) => Err(Failure {
            code: crate::failure::EXIT_USAGE,
            message: "--relay off and --relay-at contradict each other: give one".into(),
        }),
        (OnOff::Off, None, _) => Ok(()),
        (OnOff::On, Some(at), Some(file)) => {
            let secret = crate::relay::read_secret(file)?;
            config.relay_offer = Some(RelayOffer {
                addr: RelayAddr::Fixed(at.clone()),
                secret,
            });
            Ok(())
        }
        (OnOff::On, _, _) => {
            // The registry's port + 1 by default; any free port when the registry's is.
            let registry_port = args
                .addr
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .unwrap_or(0);
            let default_port = match registry_port {
                0 | u16::MAX => 0,
                p => p + 1,
            };
            config.embedded_relay = Some(EmbeddedRelay {
                port: args.relay_port.unwrap_or(default_port),
                limits: args.relay_limits.limits(),
                any_port_if_taken: args.relay_port.is_none(),
            });
            Ok(())
        }
    }
}

/// What the log printer is handed: a registry event or a relay event.
pub(crate) enum Logged {
    Registry(RegistryEvent),
    Relay(RelayEvent),
    /// An event of a registry node on the Redis store, with its node id (`--show all`,
    /// `p2pchat server log`).
    Node(Arc<str>, RegistryEvent),
    /// Events this node could not publish to the store for the others (since the
    /// last such note).
    Unpublished(u64),
}

impl Logged {
    fn node((node, e): (Arc<str>, RegistryEvent)) -> Logged {
        Logged::Node(node, e)
    }

    /// Events that `--quiet` leaves out: one per connection, query or circuit.
    fn per_query(&self) -> bool {
        match self {
            Logged::Registry(e) => matches!(
                e,
                RegistryEvent::Connected { .. }
                    | RegistryEvent::Query { .. }
                    | RegistryEvent::Disconnected { .. }
                    | RegistryEvent::Reachability { .. }
            ),
            Logged::Relay(e) => !matches!(e, RelayEvent::Refused { .. }),
            Logged::Node(_, e) => Logged::Registry(e.clone()).per_query(),
            Logged::Unpublished(_) => false,
        }
    }
}

/// A hook's side of the log queue: offers each event without ever blocking, and counts
/// what did not fit.
pub(crate) struct LogOffer {
    tx: crossbeam_channel::Sender<Logged>,
    dropped: Arc<AtomicU64>,
    quiet: bool,
}

impl LogOffer {
    pub(crate) fn new(
        tx: crossbeam_channel::Sender<Logged>,
        dropped: Arc<AtomicU64>,
        quiet: bool,
    ) -> Self {
        LogOffer { tx, dropped, quiet }
    }

    pub(crate) fn offer<E: Clone>(&self, e: &E, wrap: fn(E) -> Logged) {
        // Under a flood the queue is full: count without copying the event.
        if self.tx.is_full() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let logged = wrap(e.clone());
        if self.quiet && logged.per_query() {
            return;
        }
        if let Err(TrySendError::Full(_)) = self.tx.try_send(logged) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Print until told to stop: every queued event, and the dropped count whenever the
/// queue has emptied or [`DROP_NOTE_EVERY`] has passed. Write errors (a reader that
/// went away) are ignored: the registry goes on without its log.
pub(crate) fn print_loop(
    log: &Log,
    startup: &str,
    stopped: &str,
    queue: &Receiver<Logged>,
    stop: &Receiver<()>,
    dropped: &AtomicU64,
) {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let _ = writeln!(out, "{startup}");
    let _ = out.flush();
    let note = |out: &mut dyn Write| {
        let n = dropped.swap(0, Ordering::Relaxed);
        if n > 0 {
            let _ = writeln!(out, "{}", log.dropped(n));
        }
    };
    let mut last_note = Instant::now();
    loop {
        crossbeam_channel::select! {
            recv(queue) -> e => match e {
                Ok(e) => {
                    let _ = writeln!(out, "{}", log.event(&e));
                }
                Err(_) => break,
            },
            recv(stop) -> _ => break,
            default(DROP_NOTE_EVERY) => {}
        }
        let caught_up = queue.is_empty();
        if caught_up || last_note.elapsed() >= DROP_NOTE_EVERY {
            note(&mut out);
            last_note = Instant::now();
        }
        if caught_up {
            let _ = out.flush();
        }
    }
    // What the registry said before it stopped.
    for e in queue.try_iter() {
        let _ = writeln!(out, "{}", log.event(&e));
    }
    note(&mut out);
    let _ = writeln!(out, "{stopped}");
    let _ = out.flush();
}

/// How log lines look.
pub(crate) struct Log {
    pub(crate) style: Style,
    pub(crate) format: LogFormat,
}

impl Log {
    /// The first line (the address: tests and scripts read it), then the key's
    /// fingerprint, then where the relay is (`relay`: embedded or not, and its
    /// address); JSON: one `listening` object with all of them.
    fn listening(
        &self,
        addr: std::net::SocketAddr,
        key: Fingerprint,
        relay: Option<(bool, &str)>,
    ) -> String {
        match self.format {
            LogFormat::Text => {
                let mut text = format!("registry listening on {addr}\nregistry key: {key}");
                match relay {
                    Some((true, at)) => text.push_str(&format!("\nrelay listening on {at}")),
                    Some((false, at)) => text.push_str(&format!("\nrelay offered: {at}")),
                    None => {}
                }
                text
            }
            LogFormat::Json => {
                let addr = addr.to_string();
                let key = key.to_string();
                let mut fields = vec![("addr", Json::Str(&addr)), ("key", Json::Str(&key))];
                if let Some((embedded, at)) = relay {
                    fields.push(("relay", Json::Str(at)));
                    fields.push(("relay_embedded", Json::Bool(embedded)));
                }
                json_line(SystemTime::now(), "listening", &fields)
            }
        }
    }

    /// The line `p2pchat relay` starts with.
    pub(crate) fn relay_listening(&self, addr: std::net::SocketAddr, secret: &Path) -> String {
        match self.format {
            LogFormat::Text => format!(
                "relay listening on {addr}\nrelay secret file: {}",
                secret.display()
            ),
            LogFormat::Json => json_line(
                SystemTime::now(),
                "listening",
                &[
                    ("addr", Json::Str(&addr.to_string())),
                    ("secret_file", Json::Str(&secret.display().to_string())),
                ],
            ),
        }
    }

    /// The last line (`what`: `registry` or `relay`).
    pub(crate) fn stopped(&self, what: &str) -> String {
        match self.format {
            LogFormat::Text => format!("{what} stopped"),
            LogFormat::Json => json_line(SystemTime::now(), "stopped", &[]),
        }
    }

    fn dropped(&self, n: u64) -> String {
        match self.format {
            LogFormat::Text => {
                let now = self.style.dim(&clock(SystemTime::now()));
                let text = self.style.yellow(&format!(
                    "... {n} log line{} dropped (output too slow)",
                    if n == 1 { "" } else { "s" }
                ));
                format!("{now} {text}")
            }
            LogFormat::Json => json_line(SystemTime::now(), "dropped", &[("count", Json::Num(n))]),
        }
    }

    /// Adds this node's id to the startup lines (Redis store only).
    fn add_node(&self, startup: &mut String, node: &str) {
        match self.format {
            LogFormat::Text => startup.push_str(&format!("\nregistry node: {node}")),
            LogFormat::Json => with_node(startup, node),
        }
    }

    fn event(&self, e: &Logged) -> String {
        match (self.format, e) {
            (LogFormat::Text, Logged::Node(node, e)) => {
                // `TIME [node] …`: the node after the time (which has no space).
                let line = text_line(&self.style, e);
                match line.split_once(' ') {
                    Some((time, rest)) => format!("{time} [{node}] {rest}"),
                    None => line,
                }
            }
            (LogFormat::Json, Logged::Node(node, e)) => {
                let mut line = json_event(e);
                with_node(&mut line, node);
                line
            }
            (LogFormat::Text, Logged::Unpublished(n)) => {
                let now = self.style.dim(&clock(SystemTime::now()));
                let text = self.style.yellow(&format!(
                    "... {n} event{} not shared with the other nodes (store slow or unreachable)",
                    if *n == 1 { "" } else { "s" }
                ));
                format!("{now} {text}")
            }
            (LogFormat::Json, Logged::Unpublished(n)) => json_line(
                SystemTime::now(),
                "unpublished",
                &[("count", Json::Num(*n))],
            ),
            (LogFormat::Text, Logged::Registry(e)) => text_line(&self.style, e),
            (LogFormat::Json, Logged::Registry(e)) => json_event(e),
            (LogFormat::Text, Logged::Relay(e)) => relay_text_line(&self.style, e),
            (LogFormat::Json, Logged::Relay(e)) => relay_json_event(e),
        }
    }
}

/// Adds `"node":…` at the end of a JSON log line.
fn with_node(line: &mut String, node: &str) {
    if line.ends_with('}') {
        line.pop();
        line.push_str(",\"node\":");
        line.push_str(&json_string(node));
        line.push('}');
    }
}

/// One text line for an event; everything a client sent is made [`visible`].
fn text_line(style: &Style, e: &RegistryEvent) -> String {
    let now = || style.dim(&clock(SystemTime::now()));
    match e {
        RegistryEvent::Connected { source } => {
            format!("{} {source} {}", now(), style.green("connected"))
        }
        RegistryEvent::Query {
            at,
            source,
            query,
            outcome,
            legacy,
            key,
        } => {
            let outcome = if outcome.starts_with("ERR") {
                style.red(&visible(outcome))
            } else {
                visible(outcome).into_owned()
            };
            let legacy = if *legacy { " (legacy)" } else { "" };
            // Who registered: the key's fingerprint, on the lines that change names.
            let key = match key {
                Some(k) if query.starts_with("INIT,") || query.starts_with("EXIT,") => {
                    format!(" [key {k}]")
                }
                _ => String::new(),
            };
            format!(
                "{} {source} {}{legacy}{key} -> {outcome}",
                style.dim(&clock(*at)),
                visible(query)
            )
        }
        RegistryEvent::Disconnected { source, released } => {
            let released = if released.is_empty() {
                String::new()
            } else {
                format!(" (released {})", list(released))
            };
            // An ordinary end of a connection: not an error, so not red.
            format!("{} {source} disconnected{released}", now())
        }
        RegistryEvent::LeaseExpired { usernames } => format!(
            "{} {}",
            now(),
            style.yellow(&format!("lease expired: {}", list(usernames)))
        ),
        RegistryEvent::Refused { source, outcome } => format!(
            "{} {source} {}",
            now(),
            style.red(&format!("refused: {}", visible(outcome)))
        ),
        RegistryEvent::Reachability { user, addr, reach } => {
            let word = match reach {
                p2pcore::reach::Reach::Reachable => style.green(reach.as_str()),
                p2pcore::reach::Reach::Unreachable => style.yellow(reach.as_str()),
                p2pcore::reach::Reach::Unknown => reach.as_str().to_string(),
            };
            format!("{} {addr} {} is {word}", now(), visible(user))
        }
    }
}

/// One text line for a relay event.
fn relay_text_line(style: &Style, e: &RelayEvent) -> String {
    let now = style.dim(&clock(SystemTime::now()));
    match e {
        RelayEvent::Joined { circuit, sides } => format!(
            "{now} relay {circuit} {} {} <-> {}",
            style.green("joined"),
            sides[0],
            sides[1]
        ),
        RelayEvent::Closed {
            circuit,
            sides,
            bytes,
            lasted,
            why,
        } => format!(
            "{now} relay {circuit} closed {} <-> {} after {:.1} s, {} ({why})",
            sides[0],
            sides[1],
            lasted.as_secs_f64(),
            human_bytes(*bytes)
        ),
        RelayEvent::Refused { source, outcome } => format!(
            "{now} {source} {}",
            style.red(&format!("relay refused: {}", visible(outcome)))
        ),
    }
}

fn relay_json_event(e: &RelayEvent) -> String {
    let now = SystemTime::now();
    match e {
        RelayEvent::Joined { circuit, sides } => {
            let sides = [sides[0].to_string(), sides[1].to_string()];
            json_line(
                now,
                "relay_joined",
                &[
                    ("circuit", Json::Str(circuit)),
                    ("sides", Json::List(&sides)),
                ],
            )
        }
        RelayEvent::Closed {
            circuit,
            sides,
            bytes,
            lasted,
            why,
        } => {
            let sides = [sides[0].to_string(), sides[1].to_string()];
            let why = why.to_string();
            json_line(
                now,
                "relay_closed",
                &[
                    ("circuit", Json::Str(circuit)),
                    ("sides", Json::List(&sides)),
                    ("bytes", Json::Num(*bytes)),
                    (
                        "lasted_ms",
                        Json::Num(u64::try_from(lasted.as_millis()).unwrap_or(u64::MAX)),
                    ),
                    ("why", Json::Str(&why)),
                ],
            )
        }
        RelayEvent::Refused { source, outcome } => json_line(
            now,
            "relay_refused",
            &[
                ("source", Json::Str(&source.to_string())),
                ("outcome", Json::Str(outcome)),
            ],
        ),
    }
}

/// `n` bytes for people: `512 B`, `3.2 KiB`, `12.0 MiB`, `1.5 GiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| visible(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A JSON value in a log line.
enum Json<'a> {
    Str(&'a str),
    Num(u64),
    Bool(bool),
    List(&'a [String]),
}

/// `{"time":"…","event":"…",…}` with `fields` in order.
fn json_line(at: SystemTime, event: &str, fields: &[(&str, Json)]) -> String {
    let mut out = format!(
        "{{\"time\":{},\"event\":{}",
        json_string(&rfc3339(at)),
        json_string(event)
    );
    for (name, value) in fields {
        out.push(',');
        out.push_str(&json_string(name));
        out.push(':');
        match value {
            Json::Str(s) => out.push_str(&json_string(s)),
            Json::Num(n) => out.push_str(&n.to_string()),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&json_string(item));
                }
                out.push(']');
            }
        }
    }
    out.push('}');
    out
}

fn json_event(e: &RegistryEvent) -> String {
    let now = SystemTime::now();
    match e {
        RegistryEvent::Connected { source } => json_line(
            now,
            "connected",
            &[("source", Json::Str(&source.to_string()))],
        ),
        RegistryEvent::Query {
            at,
            source,
            query,
            outcome,
            legacy,
            key,
        } => {
            let key = key.map(|k| k.to_string());
            let source = source.to_string();
            let mut fields = vec![
                ("source", Json::Str(&source)),
                ("query", Json::Str(query)),
                ("outcome", Json::Str(outcome)),
                ("legacy", Json::Bool(*legacy)),
            ];
            if let Some(k) = &key {
                fields.push(("key", Json::Str(k)));
            }
            json_line(*at, "query", &fields)
        }
        RegistryEvent::Disconnected { source, released } => json_line(
            now,
            "disconnected",
            &[
                ("source", Json::Str(&source.to_string())),
                ("released", Json::List(released)),
            ],
        ),
        RegistryEvent::LeaseExpired { usernames } => json_line(
            now,
            "lease_expired",
            &[("usernames", Json::List(usernames))],
        ),
        RegistryEvent::Refused { source, outcome } => json_line(
            now,
            "refused",
            &[
                ("source", Json::Str(&source.to_string())),
                ("outcome", Json::Str(outcome)),
            ],
        ),
        RegistryEvent::Reachability { user, addr, reach } => json_line(
            now,
            "reachability",
            &[
                ("user", Json::Str(user)),
                ("addr", Json::Str(&addr.to_string())),
                ("reach", Json::Str(reach.as_str())),
            ],
        ),
    }
}

/// `at` as RFC 3339 in UTC with milliseconds, e.g. `2026-11-27T04:50:13.123Z`.
fn rfc3339(at: SystemTime) -> String {
    let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn rfc3339_times() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123); // leap day 2000
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_754_413);
        assert_eq!(rfc3339(t), "2026-11-27T04:40:13.000Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_107_542_399);
        assert_eq!(rfc3339(t), "2100-02-28T23:59:59.000Z");
    }

    #[test]
    fn text_lines_show_client_text_escaped() {
        let style = Style::plain();
        let source: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let line = text_line(
            &style,
            &RegistryEvent::Query {
                at: SystemTime::now(),
                source,
                query: "GET_P,\x1b[2J".into(),
                outcome: "ERR,bad\u{202e}".into(),
                legacy: true,
                key: None,
            },
        );
        assert!(
            line.ends_with("127.0.0.1:5000 GET_P,\\e[2J (legacy) -> ERR,bad\\u{202e}"),
            "{line}"
        );
        let line = text_line(
            &style,
            &RegistryEvent::Refused {
                source,
                outcome: "ERR,Too many connections from your address".into(),
            },
        );
        assert!(
            line.ends_with(" refused: ERR,Too many connections from your address"),
            "{line}"
        );
    }

    #[test]
    fn reachability_lines_name_the_user_the_address_and_the_outcome() {
        let e = RegistryEvent::Reachability {
            user: "alice".into(),
            addr: "127.0.0.1:5000".parse().unwrap(),
            reach: p2pcore::reach::Reach::Unreachable,
        };
        let line = text_line(&Style::plain(), &e);
        assert!(
            line.ends_with(" 127.0.0.1:5000 alice is unreachable"),
            "{line}"
        );
        let json = json_event(&e);
        assert!(json.contains("\"event\":\"reachability\""), "{json}");
        assert!(json.contains("\"reach\":\"unreachable\""), "{json}");
        assert!(json.contains("\"user\":\"alice\""), "{json}");
    }

    #[test]
    fn only_errors_and_refusals_are_red() {
        let style = Style::colored();
        let source: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let red = "\x1b[31m";
        let line = text_line(
            &style,
            &RegistryEvent::Disconnected {
                source,
                released: vec!["bob".into()],
            },
        );
        assert!(!line.contains(red), "{line:?}");
        assert!(
            line.ends_with("127.0.0.1:5000 disconnected (released bob)"),
            "{line:?}"
        );
        let line = text_line(
            &style,
            &RegistryEvent::LeaseExpired {
                usernames: vec!["old".into()],
            },
        );
        assert!(!line.contains(red), "{line:?}");
        let line = text_line(
            &style,
            &RegistryEvent::Refused {
                source,
                outcome: "ERR,Registry full".into(),
            },
        );
        assert!(line.contains(red), "{line:?}");
    }

    #[test]
    fn other_nodes_lines_carry_their_node() {
        let e = RegistryEvent::Query {
            at: UNIX_EPOCH,
            source: "127.0.0.1:5000".parse().unwrap(),
            query: "GET_P,bob".into(),
            outcome: "OK,127.0.0.1,6000".into(),
            legacy: false,
            key: None,
        };
        let logged = Logged::Node(Arc::from("0123456789abcdef"), e);
        let text = Log {
            style: Style::plain(),
            format: LogFormat::Text,
        };
        let line = text.event(&logged);
        let (time, rest) = line.split_once(' ').unwrap();
        assert_eq!(time, clock(UNIX_EPOCH));
        assert_eq!(
            rest,
            "[0123456789abcdef] 127.0.0.1:5000 GET_P,bob -> OK,127.0.0.1,6000"
        );
        let json = Log {
            style: Style::plain(),
            format: LogFormat::Json,
        };
        let line = json.event(&logged);
        assert!(
            line.starts_with("{\"time\":\"1970-01-01T00:00:00.000Z\",\"event\":\"query\""),
            "{line}"
        );
        assert!(
            line.ends_with(",\"legacy\":false,\"node\":\"0123456789abcdef\"}"),
            "{line}"
        );
        let line = json.event(&Logged::Unpublished(7));
        assert!(
            line.ends_with("\"event\":\"unpublished\",\"count\":7}"),
            "{line}"
        );
        let line = text.event(&Logged::Unpublished(1));
        assert!(
            line.ends_with(
                " ... 1 event not shared with the other nodes (store slow or unreachable)"
            ),
            "{line}"
        );
    }

    #[test]
    fn json_lines_are_single_line_objects() {
        let source: SocketAddr = "[::1]:5000".parse().unwrap();
        let line = json_event(&RegistryEvent::Disconnected {
            source,
            released: vec!["bob".into(), "a\"b".into()],
        });
        assert!(line.starts_with("{\"time\":\""), "{line}");
        assert!(
            line.ends_with(
                "\"event\":\"disconnected\",\"source\":\"[::1]:5000\",\"released\":[\"bob\",\"a\\\"b\"]}"
            ),
            "{line}"
        );
        let line = json_event(&RegistryEvent::Query {
            at: UNIX_EPOCH,
            source,
            query: "x\ny".into(),
            outcome: "OK".into(),
            legacy: false,
            key: None,
        });
        assert_eq!(
            line,
            "{\"time\":\"1970-01-01T00:00:00.000Z\",\"event\":\"query\",\"source\":\"[::1]:5000\",\
             \"query\":\"x\\ny\",\"outcome\":\"OK\",\"legacy\":false}"
        );
    }
}
