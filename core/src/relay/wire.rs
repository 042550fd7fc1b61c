//! The relay's few lines on the wire: the first line a connection sends, and every
//! answer the relay can give before it forwards bytes or closes. Pure: no sockets.

use crate::limits;

/// What a connection sends first: `RELAY/1 <token>\n`.
pub const PREFIX: &str = "RELAY/1 ";
/// What both sides read once they are joined; every byte after it is the other side's.
pub const JOINED: &str = "OK relayed\n";

/// Where the first line ends in the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// A whole line of this many bytes, `\n` included.
    Line(usize),
    /// No `\n` yet, and room for more.
    More,
    /// [`limits::RELAY_MAX_LINE`] bytes and still no `\n`.
    TooLong,
}

/// Finds the end of the first line in `received` (what a peek returned).
pub fn scan(received: &[u8]) -> Scan {
    match received.iter().position(|&b| b == b'\n') {
        Some(i) if i < limits::RELAY_MAX_LINE => Scan::Line(i + 1),
        Some(_) => Scan::TooLong,
        None if received.len() >= limits::RELAY_MAX_LINE => Scan::TooLong,
        None => Scan::More,
    }
}

/// The token of a first line (`\n` or `\r\n` included or not), or `None` when the line
/// is not `RELAY/1 <token>`. The token itself is checked by [`super::token::verify`].
pub fn parse_line(line: &[u8]) -> Option<&str> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).ok()?;
    let token = text.strip_prefix(PREFIX)?;
    if token.is_empty() || token.contains(|c: char| !c.is_ascii_alphanumeric()) {
        return None;
    }
    Some(token)
}

/// Why the relay turned a connection away; [`Refusal::line`] is what it is sent
/// before the close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The first line is not `RELAY/1 <token>` (or is too long).
    BadRequest,
    /// The first line did not arrive within [`limits::RELAY_LINE_TIMEOUT`].
    LineTimeout,
    /// The token was not made with this relay's secret (or is not a token).
    InvalidToken,
    /// A genuine token past its expiry.
    ExpiredToken,
    /// Two connections already joined with this token.
    TokenUsed,
    /// The other side did not come within [`limits::RELAY_PENDING_TIMEOUT`].
    OtherSideAbsent,
    /// The relay holds as many circuits as it may.
    CircuitLimit,
    /// This address takes part in as many circuits as it may.
    CircuitLimitPerAddr,
    /// The relay holds as many not-yet-joined connections as it may.
    PendingLimit,
    /// This address holds as many not-yet-joined connections as it may.
    PendingLimitPerAddr,
    /// The relay could not get what a circuit needs (descriptors, pipes, room in its
    /// table of used tokens).
    OutOfResources,
}

impl Refusal {
    /// The whole line sent, `\n` included.
    pub fn line(self) -> &'static str {
        match self {
            Refusal::BadRequest => "ERR bad request, expected RELAY/1 <token>\n",
            Refusal::LineTimeout => "ERR timeout the first line took too long\n",
            Refusal::InvalidToken => "ERR denied invalid relay token\n",
            Refusal::ExpiredToken => "ERR denied expired relay token\n",
            Refusal::TokenUsed => "ERR denied relay token already used\n",
            Refusal::OtherSideAbsent => "ERR timeout the other side did not come\n",
            Refusal::CircuitLimit => "ERR busy relay is at its circuit limit, try again later\n",
            Refusal::CircuitLimitPerAddr => {
                "ERR busy too many circuits from your address, try again later\n"
            }
            Refusal::PendingLimit => {
                "ERR busy relay has too many waiting connections, try again later\n"
            }
            Refusal::PendingLimitPerAddr => {
                "ERR busy too many waiting connections from your address, try again later\n"
            }
            Refusal::OutOfResources => "ERR busy relay is out of resources, try again later\n",
        }
    }

    /// The line without its `\n` (for logs and events).
    pub fn text(self) -> &'static str {
        self.line().trim_end()
    }

    /// Whether the refusal is about load (`ERR busy`): trying again later may work.
    pub fn is_busy(self) -> bool {
        self.line().starts_with("ERR busy ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_line_is_found_and_parsed() {
        assert_eq!(scan(b"RELAY/1 ab"), Scan::More);
        assert_eq!(scan(b"RELAY/1 ab\nrest"), Scan::Line(11));
        assert_eq!(scan(b""), Scan::More);
        assert_eq!(scan(&[b'x'; limits::RELAY_MAX_LINE]), Scan::TooLong);
        let mut long = vec![b'x'; limits::RELAY_MAX_LINE];
        long.push(b'\n');
        assert_eq!(scan(&long), Scan::TooLong);
        let mut fits = vec![b'x'; limits::RELAY_MAX_LINE - 1];
        fits.push(b'\n');
        assert_eq!(scan(&fits), Scan::Line(limits::RELAY_MAX_LINE));
        assert_eq!(parse_line(b"RELAY/1 ab12\n"), Some("ab12"));
        assert_eq!(parse_line(b"RELAY/1 ab12\r\n"), Some("ab12"));
        for bad in [
            &b"RELAY/1 \n"[..],
            b"RELAY/2 ab\n",
            b"relay/1 ab\n",
            b"RELAY/1 a b\n",
            b"RELAY/1 ab\x00\n",
            b"\xff\xfe\n",
            b"P2P/2 PROBE x\n",
        ] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn refusals_are_single_err_lines() {
        let all = [
            Refusal::BadRequest,
            Refusal::LineTimeout,
            Refusal::InvalidToken,
            Refusal::ExpiredToken,
            Refusal::TokenUsed,
            Refusal::OtherSideAbsent,
            Refusal::CircuitLimit,
            Refusal::CircuitLimitPerAddr,
            Refusal::PendingLimit,
            Refusal::PendingLimitPerAddr,
            Refusal::OutOfResources,
        ];
        for r in all {
            let line = r.line();
            assert!(line.starts_with("ERR "), "{line}");
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            assert_eq!(r.is_busy(), line.starts_with("ERR busy "));
        }
        assert_eq!(
            Refusal::InvalidToken.line(),
            "ERR denied invalid relay token\n"
        );
        assert_eq!(
            Refusal::CircuitLimit.text(),
            "ERR busy relay is at its circuit limit, try again later"
        );
    }
}
