//! The registry's reach queries (`docs/PROTOCOL.md` §5): `WATCH`, `CONNECT`, `RELAY`
//! and `PUNCH`, which exist on secured sessions only, and the budget that caps how often
//! one session may ask another peer to connect somewhere.
//!
//! Pure: parsing and arithmetic, no sockets and no tables. They are parsed here rather
//! than in [`crate::protocol::parse_query`] because they are no part of the original
//! protocol: a legacy (unterminated) query with one of these verbs must still get the
//! original server's `ERR,Invalid Request!`, byte for byte.

use crate::limits::SIGNALS_PER_MINUTE;
use crate::protocol::{check_username, reason, QueryError};
use std::time::{Duration, Instant};

/// A reach query, borrowed from its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal<'a> {
    /// `WATCH,<user>`: make this session the user's watch session (pushes).
    Watch(&'a str),
    /// `CONNECT,<callee>`: ask the callee to connect out to this session's user.
    Connect(&'a str),
    /// `RELAY,<callee>`: ask the callee to meet this session's user at the relay.
    Relay(&'a str),
    /// `PUNCH,<callee>,<port>`: ask the callee to connect at once to this session's
    /// address with `port` (where the caller's punching socket is bound), as the
    /// caller connects to the callee (a hole punched through both NATs).
    Punch(&'a str, u16),
}

/// A one-field reach query from its user field.
type MakeSignal = for<'a> fn(&'a str) -> Signal<'a>;

/// `None`: the line is no reach query (hand it to `parse_query`). `Some(Err)`: it is
/// one, malformed (the reason to answer).
pub(crate) fn parse_signal(line: &[u8]) -> Option<Result<Signal<'_>, QueryError>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // `None` for `PUNCH`, which takes a port after the user.
    let verbs: [(&[u8], Option<MakeSignal>); 4] = [
        (b"WATCH", Some(|u| Signal::Watch(u))),
        (b"CONNECT", Some(|u| Signal::Connect(u))),
        (b"RELAY", Some(|u| Signal::Relay(u))),
        (b"PUNCH", None),
    ];
    let (make, rest) = verbs
        .iter()
        .find_map(|(verb, make)| Some((*make, line.strip_prefix(*verb)?)))?;
    // `WATCHER,x` is some other (unknown) verb, not `WATCH`.
    if !(rest.is_empty() || rest.starts_with(b",")) {
        return None;
    }
    let Ok(rest) = std::str::from_utf8(rest) else {
        return Some(Err(QueryError(reason::INVALID_UTF8)));
    };
    let fields: Vec<&str> = rest.split(',').skip(1).collect();
    Some(match (make, fields.as_slice()) {
        (Some(make), [user]) => check_username(user).map(|()| make(user)),
        (None, [user, port]) => check_username(user).and_then(|()| match port.parse::<u16>() {
            Ok(p) if p != 0 => Ok(Signal::Punch(user, p)),
            _ => Err(QueryError(reason::INVALID_PORT)),
        }),
        _ => Err(QueryError(reason::WRONG_FIELD_COUNT)),
    })
}

/// A budget of so many actions per minute: a token bucket refilled evenly over a
/// minute, with a burst of the whole minute's share. What a session may still send of
/// `CONNECT`/`RELAY` ([`SIGNALS_PER_MINUTE`]: 20 at once, then one every 3 s), and how
/// many reachability checks an address may still get
/// ([`crate::limits::PROBES_PER_MINUTE_PER_ADDR`]).
#[derive(Debug, Clone)]
pub(crate) struct SignalBudget {
    per_minute: u32,
    tokens: f64,
    at: Instant,
}

impl SignalBudget {
    /// A full budget of `per_minute`.
    pub fn new(per_minute: u32, now: Instant) -> SignalBudget {
        SignalBudget {
            per_minute,
            tokens: f64::from(per_minute),
            at: now,
        }
    }

    /// A full budget of [`SIGNALS_PER_MINUTE`].
    pub fn signals(now: Instant) -> SignalBudget {
        SignalBudget::new(SIGNALS_PER_MINUTE, now)
    }

    fn refill(&mut self, now: Instant) {
        let cap = f64::from(self.per_minute);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let per_sec = cap / Duration::from_secs(60).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_sec).min(cap);
        self.at = now;
    }

    /// Take one action's token; `false`: over the budget (the action is refused).
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the budget is whole again (nothing to remember it for).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= f64::from(self.per_minute)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrong_count() -> Option<Result<Signal<'static>, QueryError>> {
        Some(Err(QueryError(reason::WRONG_FIELD_COUNT)))
    }

    #[test]
    fn reach_queries_parse_and_others_pass_through() {
        assert_eq!(
            parse_signal(b"WATCH,alice"),
            Some(Ok(Signal::Watch("alice")))
        );
        assert_eq!(
            parse_signal(b"CONNECT,bob\r"),
            Some(Ok(Signal::Connect("bob")))
        );
        assert_eq!(parse_signal(b"RELAY,bob"), Some(Ok(Signal::Relay("bob"))));
        assert_eq!(
            parse_signal(b"PUNCH,bob,40000"),
            Some(Ok(Signal::Punch("bob", 40000)))
        );
        assert_eq!(parse_signal(b"PUNCH,bob"), wrong_count());
        assert_eq!(
            parse_signal(b"PUNCH,bob,0"),
            Some(Err(QueryError(reason::INVALID_PORT)))
        );
        assert_eq!(
            parse_signal(b"PUNCH,bob,70000"),
            Some(Err(QueryError(reason::INVALID_PORT)))
        );
        for other in [
            &b"GET_U"[..],
            b"INIT,a,5",
            b"WATCHER,x",
            b"RELAYS",
            b"PUNCHY,a",
            b"",
        ] {
            assert_eq!(parse_signal(other), None, "{other:?}");
        }
        assert_eq!(parse_signal(b"WATCH"), wrong_count());
        assert_eq!(parse_signal(b"CONNECT,a,b"), wrong_count());
        assert_eq!(
            parse_signal(b"RELAY,"),
            Some(Err(QueryError(reason::INVALID_USERNAME)))
        );
        assert_eq!(
            parse_signal(b"WATCH,\xff"),
            Some(Err(QueryError(reason::INVALID_UTF8)))
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_signal_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = parse_signal(&bytes);
        }

        #[test]
        fn valid_names_round_trip(name in "[a-z][a-z0-9 _.-]{0,62}[a-z0-9]") {
            let n = name.as_str();
            for (verb, want) in [
                ("WATCH", Signal::Watch(n)),
                ("CONNECT", Signal::Connect(n)),
                ("RELAY", Signal::Relay(n)),
            ] {
                let line = format!("{verb},{name}");
                proptest::prop_assert_eq!(parse_signal(line.as_bytes()), Some(Ok(want)));
            }
        }
    }

    #[test]
    fn the_budget_allows_a_burst_then_one_every_three_seconds() {
        let t0 = Instant::now();
        let mut b = SignalBudget::signals(t0);
        for _ in 0..SIGNALS_PER_MINUTE {
            assert!(b.take(t0));
        }
        assert!(!b.take(t0));
        assert!(!b.take(t0 + Duration::from_secs(2)));
        assert!(b.take(t0 + Duration::from_millis(3100)));
        assert!(!b.take(t0 + Duration::from_millis(3200)));
        // A long pause refills the burst, never more.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..SIGNALS_PER_MINUTE {
            assert!(b.take(later));
        }
        assert!(!b.take(later));
    }
}
