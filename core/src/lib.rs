//! # p2pcore
//!
//! The engine of p2pchat: a [`Registry`](registry::Registry) server that keeps who is
//! online, and a [`Peer`](peer::Peer) that registers with it, chats with other peers
//! directly and downloads files from them while serving its own share.
//!
//! Modules, each with one job:
//! - [`protocol`]: the bytes on the wire, parsed and formatted; never touches a socket.
//! - [`limits`]: every size and time limit, in one place.
//! - [`registry`]: the registry server.
//! - [`share`]: the shared directory: scanning, hashing, safe name resolution.
//! - [`transfer`]: moving file bytes: zero-copy sending, verified receiving.
//! - [`peer`]: the client: registry session, listener, chats and downloads.
//! - [`error`]: the one error type and its stable codes.
//! - [`identity`]: a user's key pair and its fingerprint.
//! - [`known_keys`]: keys seen before, pinned (like SSH's `known_hosts`).
//! - [`secure`]: Noise handshakes and encrypted records, the same for every link.
//! - [`reach`]: how peers behind NATs are reached (direct, reverse, relayed).
//! - [`relay`]: the relay that joins two peers that cannot reach each other.
//!
//! ## Example
//!
//! A registry, two peers, a chat and a verified download, in one process (the README
//! shows the same program; `cargo run -p p2pcore --example quickstart` runs it). To use
//! the crate from another project, depend on it by path or git, e.g.
//! `p2pcore = { path = "../p2pchat/core" }` in `[dependencies]`.
//!
#![doc = "```rust"]
#![doc = include_str!("../examples/quickstart.rs")]
#![doc = "```"]

pub mod error;
pub mod identity;
pub mod known_keys;
pub mod limits;
mod net;
pub mod peer;
pub mod protocol;
pub mod reach;
pub mod registry;
pub mod relay;
pub mod secure;
pub mod share;
pub mod thread;
pub mod transfer;

pub use error::{Error, ErrorCode, Result};
