//! Reachability: how one peer reaches another, and the lines that arrange it.
//!
//! A peer behind a NAT or a firewall can register and browse, but nobody can connect
//! to its listener. p2pchat layers three paths (see `docs/PROTOCOL.md` §5):
//!
//! 1. **direct**: the caller connects to the address the registry lists;
//! 2. **reverse**: the callee cannot be reached but the caller can: the caller asks
//!    the registry (`CONNECT`), the registry pushes `DIAL` to the callee's watch
//!    session, and the callee connects out to the caller, opening with
//!    `P2P/2 REVERSE <token>`;
//! 3. **punched**: neither can be reached: the caller asks the registry (`PUNCH`), the
//!    registry pushes `PUNCH` to the callee, and both connect at once from their
//!    listening ports to the other's listed address (TCP simultaneous open), which a
//!    NAT that keeps a connection's source port lets through both ways;
//! 4. **relayed**: when that fails too (a NAT that picks a new port per connection):
//!    both connect out to a relay (`RELAY/1 <token>`), which splices the two streams.
//!
//! On every path the caller then runs the same Noise IK handshake and request as on a
//! direct connection, so the relay (and anyone on the way) sees only ciphertext.
//!
//! This module is pure: the types, and the lines parsed and formatted, no sockets.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Whether a peer's listener answered the registry's check from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Reach {
    /// Not checked (yet), or the check could not run.
    #[default]
    Unknown,
    /// The registry connected to the listener at the address it lists.
    Reachable,
    /// The registry's connection got no answer or was refused: a NAT or a firewall.
    Unreachable,
}

impl Reach {
    /// The word on the wire: `unknown`, `reachable`, `unreachable`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::Unknown => "unknown",
            Reach::Reachable => "reachable",
            Reach::Unreachable => "unreachable",
        }
    }

    /// The value of a wire word; `None` for anything else.
    pub fn parse(word: &str) -> Option<Reach> {
        match word {
            "unknown" => Some(Reach::Unknown),
            "reachable" => Some(Reach::Reachable),
            "unreachable" => Some(Reach::Unreachable),
            _ => None,
        }
    }
}

impl fmt::Display for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a chat or a transfer is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Path {
    /// The caller connected to the callee's listener.
    #[default]
    Direct,
    /// The callee connected out to the caller's listener, asked through the registry.
    Reverse,
    /// Both connected out to a relay, which forwards the (encrypted) bytes.
    Relayed,
    /// Both connected to each other at once through their NATs (TCP simultaneous
    /// open, timed by the registry): a hole punched.
    Punched,
}

impl Path {
    /// `direct`, `reverse` or `relayed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Reverse => "reverse",
            Path::Relayed => "relayed",
            Path::Punched => "punched",
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The length of a [`Token`] in bytes.
pub const TOKEN_LEN: usize = 16;

/// A one-time, unguessable token (128 bits from the OS's random source, 32 hex
/// characters on the wire): it binds a reverse connection or a reachability check to
/// the request that asked for it, so a connection nobody asked for is refused.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token([u8; TOKEN_LEN]);

impl Token {
    /// A fresh random token.
    pub fn generate() -> std::io::Result<Token> {
        let mut bytes = [0u8; TOKEN_LEN];
        getrandom::getrandom(&mut bytes).map_err(std::io::Error::other)?;
        Ok(Token(bytes))
    }

    /// The token written as 32 lowercase hex characters; `None` for anything else.
    pub fn parse(text: &str) -> Option<Token> {
        if text.len() != TOKEN_LEN * 2 {
            return None;
        }
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(text.as_bytes())
            .ok()?;
        Some(Token(bytes.try_into().ok()?))
    }

    /// The 32 hex characters.
    pub fn to_hex(self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A token is a capability: never print it whole.
        write!(f, "Token({}…)", &self.to_hex()[..6])
    }
}

/// The first line of a connection to a peer's listener that is not a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preamble {
    /// `P2P/2 PROBE <token>`: the registry checking the listener is reachable. The
    /// answer is [`probe_answer`], then the listener closes.
    Probe(Token),
    /// `P2P/2 REVERSE <token>`: a callee connecting out to this peer because this peer
    /// asked the registry (`CONNECT`) for a connection. Accepted only for a token this
    /// peer is waiting for; what follows is an ordinary `P2P/2` link, this peer
    /// dialing (IK initiator) on the accepted socket.
    Reverse(Token),
}

const PROBE: &str = "P2P/2 PROBE ";
const REVERSE: &str = "P2P/2 REVERSE ";

impl Preamble {
    /// The line, with its `\n`.
    pub fn to_line(&self) -> String {
        match self {
            Preamble::Probe(t) => format!("{PROBE}{}\n", t.to_hex()),
            Preamble::Reverse(t) => format!("{REVERSE}{}\n", t.to_hex()),
        }
    }

    /// `None`: the line (without its `\n`) is no preamble (a request, a marker).
    /// `Some(Err)`: it starts like one but is malformed (the `ERR bad-request` text).
    pub fn parse(line: &[u8]) -> Option<Result<Preamble, String>> {
        let line = std::str::from_utf8(line).ok()?;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let (rest, make): (&str, fn(Token) -> Preamble) =
            if let Some(rest) = line.strip_prefix(PROBE) {
                (rest, Preamble::Probe)
            } else if let Some(rest) = line.strip_prefix(REVERSE) {
                (rest, Preamble::Reverse)
            } else {
                return None;
            };
        Some(
            Token::parse(rest)
                .map(make)
                .ok_or_else(|| "malformed token: 32 hex characters expected".to_string()),
        )
    }
}

/// The listener's answer to a probe: `OK probe <token>\n`.
pub fn probe_answer(token: Token) -> String {
    format!("OK probe {}\n", token.to_hex())
}

/// A line the registry pushes on a peer's watch session (`WATCH,<user>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    /// `REACH,<reach>,<ip>,<port>`: the outcome of a reachability check of the
    /// listener at `addr` (the IP the registry sees, the registered port).
    Reach { reach: Reach, addr: SocketAddr },
    /// `DIAL,<token>,<ip>,<port>,<caller>`: connect out to `caller` at `addr` and open
    /// with `P2P/2 REVERSE <token>`, then serve as if `caller` had connected.
    Dial {
        token: Token,
        addr: SocketAddr,
        caller: String,
    },
    /// `RELAY,<relay token>,<relay host:port>,<caller>`: connect out to the relay, open
    /// with `RELAY/1 <relay token>`, and once it answers `OK relayed`, serve as if
    /// `caller` had connected.
    Relay {
        token: String,
        relay: String,
        caller: String,
    },
    /// `PUNCH,<ip>,<port>,<caller>`: connect now from this peer's listening port to
    /// `caller`'s listed address `addr` (the caller does the same the other way), and
    /// once connected serve as if `caller` had connected.
    Punch { addr: SocketAddr, caller: String },
}

impl Push {
    /// The line, with its `\n`.
    pub fn to_line(&self) -> String {
        match self {
            Push::Reach { reach, addr } => {
                format!("REACH,{reach},{},{}\n", addr.ip(), addr.port())
            }
            Push::Dial {
                token,
                addr,
                caller,
            } => format!(
                "DIAL,{},{},{},{caller}\n",
                token.to_hex(),
                addr.ip(),
                addr.port()
            ),
            Push::Relay {
                token,
                relay,
                caller,
            } => format!("RELAY,{token},{relay},{caller}\n"),
            Push::Punch { addr, caller } => {
                format!("PUNCH,{},{},{caller}\n", addr.ip(), addr.port())
            }
        }
    }

    /// A pushed line (without its `\n`), or what is wrong with it.
    pub fn parse(line: &str) -> Result<Push, String> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let fields: Vec<&str> = line.split(',').collect();
        let addr = |ip: &str, port: &str| -> Result<SocketAddr, String> {
            let ip: IpAddr = ip
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| format!("bad IP address {ip:?}"))?;
            let port: u16 = port
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("bad port {port:?}"))?;
            Ok(SocketAddr::new(ip.to_canonical(), port))
        };
        let name = |n: &str| -> Result<String, String> {
            crate::protocol::check_username(n).map_err(|e| e.to_string())?;
            Ok(n.to_string())
        };
        match fields.as_slice() {
            ["REACH", reach, ip, port] => Ok(Push::Reach {
                reach: Reach::parse(reach).ok_or_else(|| format!("bad reach {reach:?}"))?,
                addr: addr(ip, port)?,
            }),
            ["DIAL", token, ip, port, caller] => Ok(Push::Dial {
                token: Token::parse(token).ok_or("bad token")?,
                addr: addr(ip, port)?,
                caller: name(caller)?,
            }),
            ["PUNCH", ip, port, caller] => Ok(Push::Punch {
                addr: addr(ip, port)?,
                caller: name(caller)?,
            }),
            ["RELAY", token, relay, caller] => {
                if token.is_empty()
                    || token.len() > 256
                    || !token.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    return Err("bad relay token".into());
                }
                if relay.is_empty() || relay.len() > 300 || relay.contains(char::is_whitespace) {
                    return Err("bad relay address".into());
                }
                Ok(Push::Relay {
                    token: token.to_string(),
                    relay: relay.to_string(),
                    caller: name(caller)?,
                })
            }
            _ => Err(format!(
                "not a push line: {:?}",
                crate::protocol::truncate(line, 80)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_junk() {
        let t = Token::generate().unwrap();
        assert_eq!(Token::parse(&t.to_hex()), Some(t));
        assert_ne!(Token::generate().unwrap(), t);
        assert_eq!(Token::parse("abc"), None);
        assert_eq!(Token::parse(&"g".repeat(32)), None);
        assert!(!format!("{t:?}").contains(&t.to_hex()));
    }

    #[test]
    fn preambles_round_trip() {
        let t = Token::generate().unwrap();
        for p in [Preamble::Probe(t), Preamble::Reverse(t)] {
            let line = p.to_line();
            assert_eq!(
                Preamble::parse(line.trim_end().as_bytes()),
                Some(Ok(p.clone()))
            );
        }
        assert_eq!(Preamble::parse(b"P2P/2 IK AESGCM"), None);
        assert_eq!(Preamble::parse(b"FILE x"), None);
        assert!(matches!(Preamble::parse(b"P2P/2 PROBE zz"), Some(Err(_))));
    }

    #[test]
    fn pushes_round_trip() {
        let t = Token::generate().unwrap();
        let pushes = [
            Push::Reach {
                reach: Reach::Unreachable,
                addr: "203.0.113.7:4000".parse().unwrap(),
            },
            Push::Dial {
                token: t,
                addr: "[2001:db8::1]:5000".parse().unwrap(),
                caller: "alice".into(),
            },
            Push::Relay {
                token: "00ff".into(),
                relay: "203.0.113.1:7001".into(),
                caller: "bob".into(),
            },
            Push::Punch {
                addr: "198.51.100.7:6000".parse().unwrap(),
                caller: "carol".into(),
            },
        ];
        for p in pushes {
            let line = p.to_line();
            assert_eq!(Push::parse(line.trim_end()), Ok(p));
        }
        for bad in [
            "",
            "DIAL,x,1.2.3.4,5,alice",
            "REACH,maybe,1.2.3.4,5",
            "REACH,reachable,1.2.3.4,0",
            "RELAY,a b,host:1,bob",
            "DIAL,00000000000000000000000000000000,1.2.3.4,5,",
            "PUNCH,1.2.3.4,0,carol",
            "PUNCH,1.2.3.4,5",
            "PUNCH,nowhere,5,carol",
        ] {
            assert!(Push::parse(bad).is_err(), "{bad:?}");
        }
    }
}
