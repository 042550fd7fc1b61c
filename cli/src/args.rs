//! The command line: subcommands and their flags (clap derive).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Default registry address (the original listened on port 80; that needs privileges).
pub const DEFAULT_REGISTRY: &str = "127.0.0.1:8080";

/// Peer-to-peer chat and file sharing around a small registry.
#[derive(Debug, Parser)]
#[command(name = "p2pchat", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the registry in the foreground, printing every query as it arrives.
    Server(ServerArgs),
    /// The interactive client: register, then use the menu.
    Client(ClientArgs),
    /// List the users online, one per line.
    Users(RegistryArg),
    /// List shared files: every user's (`USER: FILE` lines), or one user's (one per line).
    Files(FilesArgs),
    /// Print where a user listens (IP:PORT).
    Whois(WhoisArgs),
    /// Stay online sharing a directory until interrupted; print incoming chat messages.
    Share(ShareArgs),
    /// Download a file from another user into DIR and print the saved path.
    Fetch(FetchArgs),
    /// Open a chat with a user, send each MESSAGE as one message, then close it.
    Send(SendArgs),
}

/// Where the registry is.
#[derive(Debug, Args)]
pub struct RegistryArg {
    /// Registry address.
    #[arg(long, value_name = "HOST:PORT", env = "P2PCHAT_REGISTRY", default_value = DEFAULT_REGISTRY)]
    pub registry: String,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on (port 0 picks a free port; `127.0.0.1:80` is the original's).
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_REGISTRY)]
    pub addr: String,
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    #[command(flatten)]
    pub registry: RegistryArg,
    /// Username to register as (prompted for when missing).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Directory to share (prompted for when missing).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Port to listen on for other peers; 0 picks a free one (prompted for when missing).
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Seconds an incoming chat request waits for an answer before it is declined.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub answer_timeout: u64,
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
    /// Username to register as.
    #[arg(long, value_name = "NAME")]
    pub user: String,
    /// Port to listen on for other peers (0 = any free port).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub port: u16,
}

#[derive(Debug, Args)]
pub struct ShareArgs {
    #[command(flatten)]
    pub registry: RegistryArg,
    #[command(flatten)]
    pub id: Identity,
    /// Directory to share.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Accept every chat request (otherwise each is declined).
    #[arg(long)]
    pub accept_chats: bool,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    #[command(flatten)]
    pub registry: RegistryArg,
    #[command(flatten)]
    pub id: Identity,
    /// Directory to share while connected; the file is saved here.
    #[arg(long, value_name = "DIR")]
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
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The user to chat with.
    #[arg(value_name = "TO_USER")]
    pub to: String,
    /// The messages, each sent as one chat message.
    #[arg(value_name = "MESSAGE", required = true)]
    pub messages: Vec<String>,
}
