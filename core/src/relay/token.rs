//! Relay tokens: what a registry hands to the two sides of a relayed connection, and
//! what the relay checks before it joins them.
//!
//! A token is `hex(id ‖ expiry ‖ tag)`: 16 random bytes naming the circuit, the expiry
//! as big-endian Unix seconds (8 bytes), and a 16-byte tag, BLAKE3's keyed hash of
//! `id ‖ expiry` under the secret the registry and the relay share (truncated).
//! So a relay joins only connections a registry arranged, and only until the expiry:
//! it is not an open bouncer for anyone who knows its address. Pure: no sockets.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bytes of the random circuit id.
const ID_LEN: usize = 16;
/// Bytes of the tag (128 bits: forging one is out of reach).
const TAG_LEN: usize = 16;
/// Bytes of a whole token before hex.
const TOKEN_LEN: usize = ID_LEN + 8 + TAG_LEN;
/// Characters of a token on the wire.
pub const TOKEN_CHARS: usize = TOKEN_LEN * 2;

/// The secret a registry and its relay share (32 random bytes). The embedded relay of
/// `p2pchat server` gets one generated in memory; a standalone relay and the registries
/// that offer it read the same file.
#[derive(Clone, PartialEq, Eq)]
pub struct RelaySecret([u8; 32]);

impl std::fmt::Debug for RelaySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelaySecret(…)")
    }
}

impl RelaySecret {
    /// A fresh secret from the OS's random source.
    pub fn generate() -> std::io::Result<RelaySecret> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).map_err(std::io::Error::other)?;
        Ok(RelaySecret(bytes))
    }

    /// The secret written as 64 hex characters (how it is kept in a file).
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    /// The secret from its 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Option<RelaySecret> {
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(text.trim().as_bytes())
            .ok()?;
        Some(RelaySecret(bytes.try_into().ok()?))
    }

    fn tag(&self, body: &[u8]) -> [u8; TAG_LEN] {
        let full = blake3::keyed_hash(&self.0, body);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full.as_bytes()[..TAG_LEN]);
        tag
    }
}

/// The circuit a valid token names: both sides present the same token, and the relay
/// joins the first two connections that do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CircuitId(pub [u8; ID_LEN]);

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token at all (length, hex) or a tag that does not match.
    Invalid,
    /// A genuine token past its expiry.
    Expired,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenError::Invalid => "invalid relay token",
            TokenError::Expired => "expired relay token",
        })
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A new token for one circuit, valid for `ttl` from `now`.
pub fn mint(secret: &RelaySecret, now: SystemTime, ttl: Duration) -> std::io::Result<String> {
    let mut body = [0u8; ID_LEN + 8];
    getrandom::getrandom(&mut body[..ID_LEN]).map_err(std::io::Error::other)?;
    let expiry = unix_secs(now).saturating_add(ttl.as_secs().max(1));
    body[ID_LEN..].copy_from_slice(&expiry.to_be_bytes());
    let mut token = Vec::with_capacity(TOKEN_LEN);
    token.extend_from_slice(&body);
    token.extend_from_slice(&secret.tag(&body));
    Ok(data_encoding::HEXLOWER.encode(&token))
}

/// The circuit `token` names, if `secret` made it and it has not expired at `now`.
/// The tag is compared in constant time (a relay must not leak how much of a forged
/// tag was right).
pub fn verify(secret: &RelaySecret, token: &str, now: SystemTime) -> Result<CircuitId, TokenError> {
    verify_until(secret, token, now).map(|(id, _)| id)
}

/// [`verify`], also giving the token's expiry: the relay remembers a joined circuit
/// until then, so its token cannot join a second time.
pub fn verify_until(
    secret: &RelaySecret,
    token: &str,
    now: SystemTime,
) -> Result<(CircuitId, SystemTime), TokenError> {
    if token.len() != TOKEN_CHARS {
        return Err(TokenError::Invalid);
    }
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(token.as_bytes())
        .map_err(|_| TokenError::Invalid)?;
    let (body, tag) = bytes.split_at(ID_LEN + 8);
    let expected = blake3::Hash::from(pad(secret.tag(body)));
    if expected != blake3::Hash::from(pad_slice(tag)) {
        return Err(TokenError::Invalid);
    }
    let mut expiry = [0u8; 8];
    expiry.copy_from_slice(&body[ID_LEN..]);
    if unix_secs(now) > u64::from_be_bytes(expiry) {
        return Err(TokenError::Expired);
    }
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&body[..ID_LEN]);
    let until = UNIX_EPOCH + Duration::from_secs(u64::from_be_bytes(expiry));
    Ok((CircuitId(id), until))
}

// blake3::Hash's `==` is constant time; it is used for the tag comparison.
fn pad(tag: [u8; TAG_LEN]) -> [u8; 32] {
    pad_slice(&tag)
}

fn pad_slice(tag: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..tag.len().min(32)].copy_from_slice(&tag[..tag.len().min(32)]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_verifies_until_it_expires() {
        let s = RelaySecret::generate().unwrap();
        let now = SystemTime::now();
        let t = mint(&s, now, Duration::from_secs(60)).unwrap();
        assert_eq!(t.len(), TOKEN_CHARS);
        let id = verify(&s, &t, now).unwrap();
        assert_eq!(verify(&s, &t, now + Duration::from_secs(59)), Ok(id));
        assert_eq!(
            verify(&s, &t, now + Duration::from_secs(120)),
            Err(TokenError::Expired)
        );
        let t2 = mint(&s, now, Duration::from_secs(60)).unwrap();
        assert_ne!(verify(&s, &t2, now).unwrap(), id);
    }

    #[test]
    fn forged_altered_and_foreign_tokens_are_refused() {
        let s = RelaySecret::generate().unwrap();
        let other = RelaySecret::generate().unwrap();
        let now = SystemTime::now();
        let t = mint(&s, now, Duration::from_secs(60)).unwrap();
        assert_eq!(verify(&other, &t, now), Err(TokenError::Invalid));
        // Push the expiry forward: the tag no longer matches.
        let mut bytes = data_encoding::HEXLOWER.decode(t.as_bytes()).unwrap();
        bytes[ID_LEN + 7] ^= 1;
        let altered = data_encoding::HEXLOWER.encode(&bytes);
        assert_eq!(verify(&s, &altered, now), Err(TokenError::Invalid));
        for junk in ["", "zz", &"0".repeat(TOKEN_CHARS), &t[..TOKEN_CHARS - 2]] {
            assert_eq!(verify(&s, junk, now), Err(TokenError::Invalid), "{junk:?}");
        }
    }

    #[test]
    fn secrets_round_trip_as_hex() {
        let s = RelaySecret::generate().unwrap();
        assert_eq!(
            RelaySecret::from_hex(&format!(" {}\n", s.to_hex())),
            Some(s)
        );
        assert_eq!(RelaySecret::from_hex("abcd"), None);
    }
}
