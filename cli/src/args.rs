//! The command line: subcommands and their flags (clap derive).

use clap::{Args, Parser, Subcommand, ValueEnum};
use p2pcore::peer::PathPolicy;
use std::net::IpAddr;
use std::path::PathBuf;

/// Default registry address (the original listened on port 80; that needs privileges).
pub const DEFAULT_REGISTRY: &str = "127.0.0.1:8080";

/// Peer-to-peer chat and file sharing around a small registry.
#[derive(Debug, Parser)]
#[command(
    name = "p2pchat",
    version,
    about,
    propagate_version = true,
    after_help = crate::failure::EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the registry in the foreground, printing every query as it arrives.
    ///
    /// The log never holds up the registry: lines that cannot be printed in time (a
    /// slow terminal, a pipe nobody reads) are dropped, and a line
    /// "... N log lines dropped" says how many once printing catches up. Ctrl-C or
    /// SIGTERM stops it (exit status 130).
    Server(ServerArgs),
    /// The interactive client: register, then use the menu.
    ///
    /// Exit status: 0 after Exit or end of input; 1 when registration cannot succeed;
    /// 130 after SIGINT/SIGTERM; 141 when stdout is closed (a pipe whose reader went
    /// away), with a line on stderr. Once registered, the client leaves the registry
    /// (EXIT) in every case.
    Client(ClientArgs),
    /// List the users online, one per line.
    Users(RegistryArg),
    /// List shared files: every user's (`USER: FILE` lines), or one user's (one per line).
    Files(FilesArgs),
    /// Print where a user listens (IP:PORT).
    Whois(WhoisArgs),
    /// Stay online sharing a directory until interrupted; print incoming chat messages.
    ///
    /// Chat messages go to stdout; chat requests, chat ends and the registry dropping
    /// or coming back to stderr. Ctrl-C or SIGTERM leaves the registry (exit status 130).
    Share(ShareArgs),
    /// Download a file from another user into DIR and print the saved path.
    Fetch(FetchArgs),
    /// Open a chat with a user, send each MESSAGE as one message, then close it.
    Send(SendArgs),
    /// Offer a file to a user; once they accept, send it and print its name once they
    /// confirmed it received and verified.
    ///
    /// Waits for the answer (the other side's answer time, 30 s by default). Exit
    /// status 3 when declined; 1 when unanswered, refused or failed; 130 after Ctrl-C
    /// (a partial file stays on the other side, and the same command resumes it).
    /// The user must be registered with a key: files go only over secured links.
    SendFile(SendFileArgs),
    /// Print your key's fingerprint (the key is created on first use).
    ///
    /// The key is your identity: the registry gives your username only to it, and
    /// other users pin it. Read the fingerprint to whoever asks whether a key is yours.
    Id(IdArgs),
    /// Accept a user's new key: pin the key the registry lists for NAME now, if its
    /// fingerprint is FINGERPRINT.
    ///
    /// After "the key of NAME has changed", ask NAME for their fingerprint (they run
    /// `p2pchat id NAME`) and give it here. NAME must be online (the registry lists
    /// the keys of users online). A different key is refused (exit status 4) and
    /// nothing is changed.
    Trust(TrustArgs),
    /// Run a standalone relay in the foreground, printing circuits as they open and
    /// close.
    ///
    /// Peers that cannot reach each other both connect out to it; it joins the two
    /// connections a registry arranged (a token made with the secret in
    /// `--secret-file`, which the registry is given with `p2pchat server --relay-at
    /// HOST:PORT --relay-secret-file F`) and forwards their end-to-end encrypted bytes.
    /// Ctrl-C or SIGTERM stops it (exit status 130).
    Relay(RelayArgs),
}

/// Where the registry is.
#[derive(Debug, Args)]
pub struct RegistryArg {
    /// Registry address. `HOST:PORT#FINGERPRINT` requires the registry to have that
    /// key (as `p2pchat server` prints it) and pins it in place of the one seen before.
    #[arg(long, value_name = "HOST:PORT[#FINGERPRINT]", env = "P2PCHAT_REGISTRY", default_value = DEFAULT_REGISTRY, value_parser = parse_registry)]
    pub registry: String,
    /// Talk to the registry as the original C++ client did (one query per connection,
    /// form-B INIT re-sent every 60 s). Without it p2pchat finds out by itself.
    #[arg(long)]
    pub legacy_registry: bool,
    /// The keys seen before (the registry's, and each user's), pinned like SSH's
    /// known_hosts: a changed one is refused. Default: known_keys in the p2pchat
    /// config directory ($XDG_CONFIG_HOME/p2pchat or ~/.config/p2pchat).
    #[arg(long, value_name = "FILE", value_parser = parse_dir)]
    pub known_keys: Option<PathBuf>,
}

impl RegistryArg {
    /// The library's registry mode for these flags.
    pub fn mode(&self) -> p2pcore::peer::RegistryMode {
        if self.legacy_registry {
            p2pcore::peer::RegistryMode::Legacy
        } else {
            p2pcore::peer::RegistryMode::Auto
        }
    }

    /// The registry's `HOST:PORT`, without a `#FINGERPRINT`: also the scope of the
    /// users' pinned keys.
    pub fn address(&self) -> &str {
        registry_address(&self.registry)
    }

    /// The known-keys file: `--known-keys`, else the default one; `None` when there
    /// is no config directory (no `HOME`): pins are then kept for this run only.
    pub fn known_keys_file(&self) -> Option<PathBuf> {
        self.known_keys
            .clone()
            .or_else(p2pcore::known_keys::KnownKeys::default_path)
    }
}

/// `HOST:PORT` of a registry address that may end in `#FINGERPRINT`.
pub fn registry_address(text: &str) -> &str {
    text.split_once('#').map_or(text, |(a, _)| a)
}

/// A registry address as typed: `HOST:PORT`, optionally `#FINGERPRINT`.
pub fn parse_registry(text: &str) -> Result<String, String> {
    if let Some((addr, fp)) = text.split_once('#') {
        parse_addr(addr)?;
        if p2pcore::identity::Fingerprint::parse(fp).is_none() {
            return Err(format!(
                "{fp:?} after '#' is not a key fingerprint (32 letters A-Z and digits 2-7, \
                 dashes allowed, as `p2pchat server` prints it)"
            ));
        }
        return Ok(text.to_string());
    }
    parse_addr(text)
}

/// A key fingerprint as people write it (`ABCD-EFGH-…`; case, dashes and spaces do
/// not matter).
pub fn parse_fingerprint(text: &str) -> Result<p2pcore::identity::Fingerprint, String> {
    p2pcore::identity::Fingerprint::parse(text).ok_or_else(|| {
        format!(
            "{text:?} is not a key fingerprint (32 letters A-Z and digits 2-7, dashes \
             allowed, as `p2pchat id` prints it)"
        )
    })
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// An operator's task on the registry's data instead of serving.
    #[command(subcommand)]
    pub action: Option<ServerAction>,
    /// Address to listen on (port 0 picks a free port; `127.0.0.1:80` is the original's).
    /// Defaults to `P2PCHAT_REGISTRY`, so one variable points the server and its
    /// clients at the same address.
    #[arg(long, value_name = "HOST:PORT", env = "P2PCHAT_REGISTRY", default_value = DEFAULT_REGISTRY, value_parser = parse_addr)]
    pub addr: String,
    /// No line per connection and query: only startup, shutdown, refusals (a client
    /// stopped by a bound), lease expiries and dropped-line counts.
    #[arg(long)]
    pub quiet: bool,
    /// `text` for people; `json` for log shippers: one JSON object per line with the
    /// fields `time` (RFC 3339, UTC), `event` (`listening`, `connected`, `query`,
    /// `disconnected`, `lease_expired`, `refused`, `dropped`, `stopped`) and, by event,
    /// `addr`, `key` (the registry's fingerprint on `listening`; on a `query`, the
    /// fingerprint of the encrypted session's key), `source`, `query`, `outcome`,
    /// `legacy`, `released`, `usernames`, `count`; with the Redis store, `node` (this
    /// node's id on `listening`; with `--show all`, each event's node) and
    /// `unpublished` events (`count`: events not shared with the other nodes).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Most open connections in all.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Most open connections from one address (one /64 for IPv6).
    #[arg(long, value_name = "N")]
    pub max_conns_per_addr: Option<usize>,
    /// Most registered users in all.
    #[arg(long, value_name = "N")]
    pub max_users: Option<usize>,
    /// Most registrations held by one address (one /64 for IPv6).
    #[arg(long, value_name = "N")]
    pub max_users_per_addr: Option<usize>,
    /// Sustained queries per second from one address.
    #[arg(long, value_name = "N")]
    pub queries_per_sec: Option<u32>,
    /// Queries one address may send at once above its sustained rate.
    #[arg(long, value_name = "N")]
    pub query_burst: Option<u32>,
    /// Most memory for registration data, in bytes or with a K, M or G suffix
    /// (binary: 512M is 512 MiB); past it new registrations get `ERR,Registry full`.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory_budget: Option<usize>,
    /// Where the registry keeps its key (`registry.key`, shown as `registry key: …` at
    /// start, what clients pin) and the name claims (`claims.redb`). Created with mode
    /// 0700. Default: `$XDG_DATA_HOME/p2pchat/registry`, else
    /// `~/.local/share/p2pchat/registry`.
    #[arg(long, value_name = "DIR", conflicts_with = "ephemeral")]
    pub data_dir: Option<PathBuf>,
    /// No data directory: a new key at each start, and name claims kept in memory only
    /// (a restart forgets them).
    #[arg(long)]
    pub ephemeral: bool,
    /// Days a name claim lives unused (not registered by its key) before anyone may
    /// take the name.
    #[arg(long, value_name = "N", default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub claim_ttl_days: u64,
    /// The relay inside the server, for peers that cannot reach each other (both
    /// connect out to it; it forwards their encrypted bytes): `on` (listening on the
    /// registry's IP, see `--relay-port`) or `off`.
    #[arg(long, value_name = "on|off", value_enum, default_value_t = OnOff::On)]
    pub relay: OnOff,
    /// The embedded relay's port. Default: the registry's port + 1 (any free port when
    /// that is taken, or when the registry's port is 0).
    #[arg(long, value_name = "PORT")]
    pub relay_port: Option<u16>,
    /// Offer a standalone relay (`p2pchat relay`) at this address instead of running
    /// one inside the server; needs `--relay-secret-file`.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_addr, requires = "relay_secret_file")]
    pub relay_at: Option<String>,
    /// The secret shared with the standalone relay of `--relay-at` (the file `p2pchat
    /// relay --secret-file` created).
    #[arg(long, value_name = "FILE", requires = "relay_at")]
    pub relay_secret_file: Option<PathBuf>,
    /// The relay's bounds (embedded relay).
    #[command(flatten)]
    pub relay_limits: RelayLimitArgs,
    /// Where the directory lives: `memory` (this process) or `redis://HOST:PORT[/DB]`,
    /// a Redis 7 (or Valkey) shared by every registry node given the same URL (users,
    /// name claims, per-address registration caps; give each node the same
    /// `registry.key` so clients pin one fingerprint).
    // Boxed: the command enum's variants stay near one size (clippy).
    #[arg(long, value_name = "STORE", default_value = "memory", value_parser = parse_store)]
    pub store: Box<p2pcore::registry::StoreSpec>,
    /// Whose events to print: `own` (this node's) or `all` (every node on the same
    /// `--store redis://…`, each line tagged with its node id; needs the Redis store).
    #[arg(long, value_name = "own|all", value_enum, default_value_t = Show::Own)]
    pub show: Show,
    /// With `--store redis://…`: whether this node shares its events with the other
    /// nodes' `--show all` and `p2pchat server log` (`off` spares it an event per
    /// query under a flood; its own log is unchanged).
    #[arg(long, value_name = "on|off", value_enum, default_value_t = OnOff::On)]
    pub publish_events: OnOff,
}

/// `--show`: this node's events or every node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Show {
    Own,
    All,
}

/// `p2pchat server log`: every node's events, without serving.
#[derive(Debug, Args)]
pub struct ServerLogArgs {
    /// The Redis the registry nodes share (`redis://HOST:PORT[/DB]`, their `--store`).
    #[arg(long, value_name = "STORE", value_parser = parse_store)]
    pub store: Box<p2pcore::registry::StoreSpec>,
    /// Print the last N events the nodes published before following (at most 10,000).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub last: usize,
    /// No line per connection and query (as `p2pchat server --quiet`).
    #[arg(long)]
    pub quiet: bool,
    /// `text` or `json`, as `p2pchat server`, each line with its node.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `--store`: `memory` or `redis://HOST:PORT[/DB]`.
fn parse_store(s: &str) -> Result<Box<p2pcore::registry::StoreSpec>, String> {
    p2pcore::registry::StoreSpec::parse(s)
        .map(Box::new)
        .map_err(|e| e.to_string())
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// `p2pchat relay`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8081", value_parser = parse_addr)]
    pub addr: String,
    /// The secret the relay shares with the registries that offer it (64 hex
    /// characters); created, readable by you only, when missing.
    #[arg(long, value_name = "FILE")]
    pub secret_file: PathBuf,
    /// No line per circuit: only startup, shutdown and refusals.
    #[arg(long)]
    pub quiet: bool,
    /// `text` for people; `json`: one JSON object per line (`listening`,
    /// `relay_joined`, `relay_closed`, `relay_refused`, `dropped`, `stopped`).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub limits: RelayLimitArgs,
}

/// The relay's bounds on the command line (defaults: `p2pcore::limits`). The same
/// `--relay-…` names in `p2pchat server` (its embedded relay) and `p2pchat relay`, so
/// a setting moves between the two unchanged and never reads as a registry bound.
#[derive(Debug, Args)]
pub struct RelayLimitArgs {
    /// Relay: most circuits at once (a circuit whose first side waits included).
    #[arg(long = "relay-max-circuits", value_name = "N")]
    pub max_circuits: Option<usize>,
    /// Relay: most circuits one address (one /64 for IPv6) takes part in.
    #[arg(long = "relay-max-circuits-per-addr", value_name = "N")]
    pub max_circuits_per_addr: Option<usize>,
    /// Relay: most connections not yet joined.
    #[arg(long = "relay-max-pending", value_name = "N")]
    pub max_pending: Option<usize>,
    /// Relay: most connections not yet joined from one address.
    #[arg(long = "relay-max-pending-per-addr", value_name = "N")]
    pub max_pending_per_addr: Option<usize>,
    /// Relay: bytes per second per circuit, both directions together (K, M, G
    /// suffixes; 0: no limit).
    #[arg(long = "relay-circuit-rate", value_name = "SIZE", value_parser = parse_size)]
    pub circuit_rate: Option<usize>,
    /// Relay: bytes per second of all circuits together (0: no limit).
    #[arg(long = "relay-total-rate", value_name = "SIZE", value_parser = parse_size)]
    pub total_rate: Option<usize>,
    /// Relay: longest life of a circuit, in seconds; then both sides are closed.
    #[arg(long = "relay-max-lifetime", value_name = "SECS")]
    pub max_lifetime: Option<u64>,
    /// Relay: seconds a circuit may forward nothing before it is closed.
    #[arg(long = "relay-idle-timeout", value_name = "SECS")]
    pub idle_timeout: Option<u64>,
}

impl RelayLimitArgs {
    /// The defaults, with what was given.
    pub fn limits(&self) -> p2pcore::relay::RelayLimits {
        let d = p2pcore::relay::RelayLimits::default();
        let secs = |v: Option<u64>, d| v.map_or(d, std::time::Duration::from_secs);
        p2pcore::relay::RelayLimits {
            max_circuits: self.max_circuits.unwrap_or(d.max_circuits),
            max_circuits_per_addr: self
                .max_circuits_per_addr
                .unwrap_or(d.max_circuits_per_addr),
            max_pending: self.max_pending.unwrap_or(d.max_pending),
            max_pending_per_addr: self.max_pending_per_addr.unwrap_or(d.max_pending_per_addr),
            circuit_bytes_per_sec: self
                .circuit_rate
                .map_or(d.circuit_bytes_per_sec, |v| v as u64),
            total_bytes_per_sec: self.total_rate.map_or(d.total_bytes_per_sec, |v| v as u64),
            max_lifetime: secs(self.max_lifetime, d.max_lifetime),
            idle_timeout: secs(self.idle_timeout, d.idle_timeout),
            ..d
        }
    }
}

/// `p2pchat server <ACTION>`.
#[derive(Debug, Subcommand)]
pub enum ServerAction {
    /// Release a username's claim, so that any key (or a plaintext client) may
    /// register it again. Run it while the registry using DIR is stopped: the running
    /// registry holds its claims store locked.
    ReleaseName(ReleaseNameArgs),
    /// Print the events of every registry node sharing a Redis store, live and tagged
    /// with their node, without serving.
    Log(ServerLogArgs),
}

#[derive(Debug, Args)]
pub struct ReleaseNameArgs {
    /// The username whose claim to release.
    pub name: String,
    /// The registry's data directory (default as for `p2pchat server`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// How `p2pchat server` writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per event for people: time, source, what happened.
    Text,
    /// One JSON object per line.
    Json,
}

/// A `HOST:PORT` address as typed (a name, an IPv4 address or a bracketed IPv6 one, then
/// a port): checked here so a malformed one is a usage error, not "cannot reach".
pub fn parse_addr(text: &str) -> Result<String, String> {
    let bad = || format!("{text:?} is not HOST:PORT (e.g. 127.0.0.1:8080 or [::1]:8080)");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let host_ok = match bare {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && !host.contains(':')
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        }
    };
    if !host_ok || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(text.to_string())
}

/// A directory as typed, with a leading `~` or `~/` meaning the home directory (`$HOME`),
/// as a shell would expand it: the prompt and a quoted `--dir "~/share"` get no shell.
pub fn expand_home(text: &str) -> PathBuf {
    let home = || {
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
    };
    if text == "~" {
        if let Some(h) = home() {
            return h;
        }
    } else if let Some(rest) = text.strip_prefix("~/") {
        if let Some(h) = home() {
            return h.join(rest);
        }
    }
    PathBuf::from(text)
}

fn parse_path_policy(text: &str) -> Result<PathPolicy, String> {
    PathPolicy::parse(text)
        .ok_or_else(|| format!("{text:?} is not a path: auto, direct, reverse, punch or relay"))
}

fn parse_dir(text: &str) -> Result<PathBuf, String> {
    Ok(expand_home(text))
}

/// A byte count with an optional binary suffix: `4096`, `64K`, `512M`, `2G` (`KiB`,
/// `MiB`, `GiB` and lower case also accepted).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(digits_end);
    let shift = match unit.trim() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("{t:?} is not a size (e.g. 4096, 64K, 512M, 2G)")),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{t:?} is not a size (e.g. 4096, 64K, 512M, 2G)"))?;
    n.checked_mul(1usize << shift)
        .ok_or_else(|| format!("{t:?} is too large"))
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    #[command(flatten)]
    pub registry: RegistryArg,
    /// Username to register as (prompted for when missing).
    #[arg(long, value_name = "NAME", env = "P2PCHAT_USER")]
    pub user: Option<String>,
    /// Directory to share (prompted for when missing).
    #[arg(long, value_name = "DIR", value_parser = parse_dir)]
    pub dir: Option<PathBuf>,
    /// Port to listen on for other peers; 0 picks a free one (prompted for when missing).
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Seconds an incoming chat request waits for an answer before it is declined.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub answer_timeout: u64,
    /// Seconds during which a further chat request from someone who just asked is
    /// declined without asking you (0: no wait; a second request while one is waiting is always declined).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub repeat_window: u64,
    /// Listen for other peers on this IP only. Without it the library chooses (the
    /// local address of the registry connection: a loopback registry means a
    /// loopback-only peer). `0.0.0.0` or `::` listen on every interface.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<IpAddr>,
    /// Your key file (created, mode 0600, on first use). Default: USERNAME.key in the
    /// p2pchat config directory ($XDG_CONFIG_HOME/p2pchat or ~/.config/p2pchat).
    #[arg(long, value_name = "FILE", env = "P2PCHAT_IDENTITY", value_parser = parse_dir)]
    pub identity: Option<PathBuf>,
    #[command(flatten)]
    pub serving: Serving,
    /// How to reach other peers: `auto` (direct, then reverse connect, then a hole
    /// punch, then the relay), or only `direct`, `reverse`, `punch` or `relay` (a
    /// relayed link connects the other peer to the relay, not to you; the registry
    /// still lists your address).
    #[arg(long, value_name = "PATH", default_value = "auto", value_parser = parse_path_policy)]
    pub path: PathPolicy,
}

/// Whom a peer that stays online talks to and serves.
#[derive(Debug, Args)]
pub struct Serving {
    /// Refuse partners that cannot prove who they are (original clients, users
    /// registered without a key): their chat requests and downloads are refused, and
    /// so are chats and downloads to them.
    #[arg(long)]
    pub refuse_unverified: bool,
    /// Serve files only to these users (comma-separated; `key:<64 hex digits>` names a
    /// key whatever its name). Default: every registered user whose key is known.
    #[arg(long, value_name = "NAME[,NAME...]", value_delimiter = ',')]
    pub serve_only: Vec<String>,
}

impl Serving {
    /// These choices on `builder`.
    pub fn apply(&self, builder: p2pcore::peer::PeerBuilder) -> p2pcore::peer::PeerBuilder {
        let b = builder.refuse_unverified(self.refuse_unverified);
        if self.serve_only.is_empty() {
            b
        } else {
            b.serve_only(self.serve_only.iter().map(|n| n.trim().to_string()))
        }
    }
}

#[derive(Debug, Args)]
pub struct FilesArgs {
    #[command(flatten)]
    pub registry: RegistryArg,
    /// Only this user's files.
    #[arg(value_name = "USER")]
    pub user: Option<String>,
}

#[derive(Debug, Args)]
pub struct WhoisArgs {
    #[command(flatten)]
    pub registry: RegistryArg,
    /// The user to look up.
    #[arg(value_name = "USER")]
    pub user: String,
}

/// Who this peer is: name, share and port.
#[derive(Debug, Args)]
pub struct Identity {
    /// Username to register as. When it is online in another process (your `client`
    /// or `share`), `fetch` and `send` register as NAME~2 (or ~3, … ~9) for the run;
    /// `share` fails.
    #[arg(long, value_name = "NAME", env = "P2PCHAT_USER")]
    pub user: String,
    /// Port to listen on for other peers (0 = any free port).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub port: u16,
    /// Listen for other peers on this IP only. Without it the library chooses (the
    /// local address of the registry connection: a loopback registry means a
    /// loopback-only peer). `0.0.0.0` or `::` listen on every interface.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<IpAddr>,
    /// Your key file (created, mode 0600, on first use). Default: NAME.key in the
    /// p2pchat config directory ($XDG_CONFIG_HOME/p2pchat or ~/.config/p2pchat).
    #[arg(long, value_name = "FILE", env = "P2PCHAT_IDENTITY", value_parser = parse_dir)]
    pub identity: Option<PathBuf>,
    /// How to reach other peers: `auto` (direct, then reverse connect, then a hole
    /// punch, then the relay), or only `direct`, `reverse`, `punch` or `relay` (a
    /// relayed link connects the other peer to the relay, not to you; the registry
    /// still lists your address).
    #[arg(long, value_name = "PATH", default_value = "auto", value_parser = parse_path_policy)]
    pub path: PathPolicy,
}

#[derive(Debug, Args)]
pub struct ShareArgs {
    #[command(flatten)]
    pub registry: RegistryArg,
    #[command(flatten)]
    pub id: Identity,
    /// Directory to share.
    #[arg(long, value_name = "DIR", value_parser = parse_dir)]
    pub dir: PathBuf,
    /// Accept every chat request (otherwise each is declined).
    #[arg(long)]
    pub accept_chats: bool,
    /// Accept every file offered (`send-file`) into DIR (otherwise each is declined).
    /// A file of a name already there is declined; a partial one of the same content
    /// is resumed.
    #[arg(long, value_name = "DIR", value_parser = parse_dir)]
    pub accept_files: Option<PathBuf>,
    #[command(flatten)]
    pub serving: Serving,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    #[command(flatten)]
    pub registry: RegistryArg,
    #[command(flatten)]
    pub id: Identity,
    /// Directory to share while connected; the file is saved here.
    #[arg(long, value_name = "DIR", value_parser = parse_dir)]
    pub dir: PathBuf,
    /// The user to download from.
    #[arg(value_name = "FROM_USER")]
    pub from: String,
    /// The file's name in their share.
    #[arg(value_name = "FILE")]
    pub file: String,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub registry: RegistryArg,
    #[command(flatten)]
    pub id: Identity,
    /// Directory to share while connected (default: an empty temporary one).
    #[arg(long, value_name = "DIR", value_parser = parse_dir)]
    pub dir: Option<PathBuf>,
    /// The user to chat with.
    #[arg(value_name = "TO_USER")]
    pub to: String,
    /// The messages, each sent as one chat message.
    #[arg(value_name = "MESSAGE", required = true)]
    pub messages: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SendFileArgs {
    #[command(flatten)]
    pub registry: RegistryArg,
    #[command(flatten)]
    pub id: Identity,
    /// Directory to share while connected (default: an empty temporary one).
    #[arg(long, value_name = "DIR", value_parser = parse_dir)]
    pub dir: Option<PathBuf>,
    /// The user to send the file to.
    #[arg(value_name = "TO_USER")]
    pub to: String,
    /// The file to send (it arrives under its own name).
    #[arg(value_name = "PATH", value_parser = parse_dir)]
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// Whose key: USERNAME.key in the p2pchat config directory.
    #[arg(value_name = "USERNAME", env = "P2PCHAT_USER")]
    pub user: Option<String>,
    /// The key file to use instead (created, mode 0600, when missing).
    #[arg(long, value_name = "FILE", env = "P2PCHAT_IDENTITY", value_parser = parse_dir)]
    pub identity: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TrustArgs {
    #[command(flatten)]
    pub registry: RegistryArg,
    /// The user whose key to accept.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The fingerprint NAME told you (`p2pchat id` prints it).
    #[arg(value_name = "FINGERPRINT", value_parser = parse_fingerprint)]
    pub fingerprint: p2pcore::identity::Fingerprint,
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2gib"), Ok(2 << 30));
        assert_eq!(parse_size(" 3 MiB "), Ok(3 << 20));
        for bad in ["", "M", "12Q", "-1", "1.5G", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn registry_addresses_may_pin_a_fingerprint() {
        let fp = "H3GE-5NQA-W2TK-RD7V-ZX4M-LP6B-C7YJ-UF2N";
        let pinned = format!("127.0.0.1:8080#{fp}");
        assert_eq!(super::parse_registry(&pinned), Ok(pinned.clone()));
        assert_eq!(super::registry_address(&pinned), "127.0.0.1:8080");
        assert_eq!(super::registry_address("[::1]:80"), "[::1]:80");
        for bad in [
            "127.0.0.1:8080#",
            "127.0.0.1:8080#H3GE",
            "127.0.0.1#H3GE-5NQA-W2TK-RD7V-ZX4M-LP6B-C7YJ-UF2N",
            "127.0.0.1:8080#H3GE-5NQA-W2TK-RD7V-ZX4M-LP6B-C7YJ-UF21",
        ] {
            assert!(super::parse_registry(bad).is_err(), "{bad:?}");
        }
        assert!(super::parse_fingerprint(&fp.to_lowercase().replace('-', " ")).is_ok());
    }

    #[test]
    fn registry_addresses_are_host_and_port() {
        for good in [
            "127.0.0.1:8080",
            "localhost:80",
            "[::1]:8080",
            "reg.example-1.org:0",
        ] {
            assert_eq!(super::parse_addr(good).as_deref(), Ok(good));
        }
        for bad in [
            "",
            "8080",
            "localhost",
            ":8080",
            "host:",
            "host:99999",
            "::1:80",
            "a b:80",
            "[x]:80",
        ] {
            assert!(super::parse_addr(bad).is_err(), "{bad:?}");
        }
    }
}
