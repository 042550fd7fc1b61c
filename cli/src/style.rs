//! Colours (plain ANSI codes), on only when stdout is a terminal and `NO_COLOR` is unset.

use std::io::IsTerminal;

/// Whether to colour, and the colours used.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    enabled: bool,
}

impl Style {
    /// Colours for stdout: off when `NO_COLOR` is set (non-empty) or stdout is not a
    /// terminal.
    pub fn stdout() -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            enabled: !no_color && std::io::stdout().is_terminal(),
        }
    }

    /// No colours (for tests).
    #[cfg(test)]
    pub fn plain() -> Style {
        Style { enabled: false }
    }

    /// Colours whatever the output (for tests).
    #[cfg(test)]
    pub fn colored() -> Style {
        Style { enabled: true }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.enabled {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// Connections, success.
    pub fn green(&self, text: &str) -> String {
        self.paint("32", text)
    }

    /// Errors and refusals.
    pub fn red(&self, text: &str) -> String {
        self.paint("31", text)
    }

    /// Things that need an answer (chat requests), warnings.
    pub fn yellow(&self, text: &str) -> String {
        self.paint("33", text)
    }

    /// Names of people.
    pub fn cyan(&self, text: &str) -> String {
        self.paint("36", text)
    }

    /// Headings.
    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    /// Secondary detail (timestamps).
    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }
}

/// The local time of day as `HH:MM:SS`.
pub fn clock(at: std::time::SystemTime) -> String {
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let t = secs as libc::time_t;
    // SAFETY: localtime_r only writes into the `tm` we own; a zeroed tm is valid.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if ok {
        format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
    } else {
        let s = secs % 86_400;
        format!("{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
    }
}
