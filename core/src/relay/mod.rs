//! The relay: joins two outbound connections from peers that cannot reach each other
//! and forwards bytes between them. Both sides then run their usual end-to-end Noise
//! session through it, so the relay forwards ciphertext only (see [`crate::reach`]).
//!
//! A registry offers a relay to its peers ([`RelayOffer`]) and mints the
//! [tokens](token) that the relay checks before joining two connections.

mod bucket;
mod forward;
mod server;
pub mod token;
pub mod wire;

pub use forward::Forwarding;
pub use server::{
    CloseReason, Relay, RelayBuilder, RelayEvent, RelayHook, RelayLimits, RelayStats,
};
pub use token::{RelaySecret, TokenError};

use std::net::IpAddr;

/// Where peers find the relay a registry offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayAddr {
    /// The relay embedded in the registry process, on this port of whichever address
    /// the peer reached the registry at (so the answer holds on every interface).
    Port(u16),
    /// A standalone relay at this `host:port`.
    Fixed(String),
}

impl RelayAddr {
    /// The `host:port` to tell a peer that reached the registry at `local_ip`.
    pub fn advertise(&self, local_ip: IpAddr) -> String {
        match self {
            RelayAddr::Port(port) => std::net::SocketAddr::new(local_ip, *port).to_string(),
            RelayAddr::Fixed(addr) => addr.clone(),
        }
    }
}

/// The relay a registry offers: its address, and the secret to mint its tokens.
#[derive(Debug, Clone)]
pub struct RelayOffer {
    /// Where peers connect.
    pub addr: RelayAddr,
    /// Shared with the relay.
    pub secret: RelaySecret,
}
