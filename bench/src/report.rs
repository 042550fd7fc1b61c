//! Figures, their goals, and the two ways of printing them: a text table and JSON.
//!
//! Every scenario returns [`Figure`]s; each figure is a median over several runs, with
//! the minimum and maximum kept so the spread is visible.

use std::fmt::Write as _;

/// Median, minimum and maximum of one figure over its runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Stats {
    /// The statistics of `samples` (one per run). Empty input gives NaNs and `runs: 0`.
    pub fn of(samples: &[f64]) -> Stats {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return Stats {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
                runs: 0,
            };
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Stats {
            median,
            min: v[0],
            max: v[n - 1],
            runs: n,
        }
    }
}

/// What a figure should reach.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// p2pchat's median divided by the baseline's median is at least this.
    RatioAtLeast(f64),
    /// p2pchat's median divided by the baseline's median is at most this (for figures
    /// where lower is better, such as latencies).
    RatioAtMost(f64),
    /// p2pchat's median is at least this (in the figure's unit).
    AtLeast(f64),
    /// p2pchat's median is at most this (in the figure's unit).
    AtMost(f64),
    /// p2pchat's median is strictly below this (in the figure's unit).
    Below(f64),
    /// A property the scenario checked itself (`what` is shown as the goal).
    Check { what: &'static str, met: bool },
}

impl Goal {
    fn describe(&self, unit: &str) -> String {
        match self {
            Goal::RatioAtLeast(r) => format!(">= {}x baseline", num(*r)),
            Goal::RatioAtMost(r) => format!("<= {}x baseline", num(*r)),
            Goal::AtLeast(v) => format!(">= {} {unit}", num(*v)),
            Goal::AtMost(v) => format!("<= {} {unit}", num(*v)),
            Goal::Below(v) => format!("< {} {unit}", num(*v)),
            Goal::Check { what, .. } => what.to_string(),
        }
    }
}

/// One line of the results table.
#[derive(Debug, Clone)]
pub struct Figure {
    /// `T2 GET_P throughput`: scenario id first.
    pub name: String,
    pub unit: &'static str,
    pub p2pchat: Stats,
    pub baseline: Option<Stats>,
    /// p2pchat median / baseline median, when there is a baseline.
    pub ratio: Option<f64>,
    pub goal: Option<Goal>,
    /// Anything a reader needs to interpret the number (load, errors, caveats).
    pub extra: String,
}

impl Figure {
    /// A figure with no baseline.
    pub fn single(name: impl Into<String>, unit: &'static str, p2pchat: Stats) -> Figure {
        Figure {
            name: name.into(),
            unit,
            p2pchat,
            baseline: None,
            ratio: None,
            goal: None,
            extra: String::new(),
        }
    }

    /// A figure compared with a baseline; the ratio is computed from the medians.
    pub fn compared(
        name: impl Into<String>,
        unit: &'static str,
        p2pchat: Stats,
        baseline: Stats,
    ) -> Figure {
        let ratio = if baseline.median != 0.0 && baseline.median.is_finite() {
            Some(p2pchat.median / baseline.median)
        } else {
            None
        };
        Figure {
            baseline: Some(baseline),
            ratio,
            ..Figure::single(name, unit, p2pchat)
        }
    }

    pub fn goal(mut self, goal: Goal) -> Figure {
        self.goal = Some(goal);
        self
    }

    pub fn extra(mut self, extra: impl Into<String>) -> Figure {
        self.extra = extra.into();
        self
    }

    /// `None` when there is no goal; `Some(false)` when it is missed or cannot be judged.
    pub fn goal_met(&self) -> Option<bool> {
        let goal = self.goal?;
        let m = self.p2pchat.median;
        Some(match goal {
            Goal::RatioAtLeast(r) => self.ratio.is_some_and(|x| x >= r),
            Goal::RatioAtMost(r) => self.ratio.is_some_and(|x| x <= r),
            Goal::AtLeast(v) => m >= v,
            Goal::AtMost(v) => m <= v,
            Goal::Below(v) => m < v,
            Goal::Check { met, .. } => met,
        })
    }
}

/// A number with as many decimals as its size deserves.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let a = x.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 0.1 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn stats_cell(s: &Stats) -> String {
    if s.runs <= 1 {
        num(s.median)
    } else {
        format!("{} [{}..{}]", num(s.median), num(s.min), num(s.max))
    }
}

/// The figures as a text table; each figure's `extra` goes on a line of its own below.
pub fn table(figures: &[Figure]) -> String {
    let header = [
        "figure",
        "unit",
        "p2pchat median [min..max]",
        "baseline median [min..max]",
        "ratio",
        "goal",
        "met",
    ];
    let rows: Vec<[String; 7]> = figures
        .iter()
        .map(|f| {
            [
                f.name.clone(),
                f.unit.to_string(),
                stats_cell(&f.p2pchat),
                f.baseline.as_ref().map_or("-".into(), stats_cell),
                f.ratio.map_or("-".into(), |r| format!("{}x", num(r))),
                f.goal.map_or("-".into(), |g| g.describe(f.unit)),
                match f.goal_met() {
                    None => "-".into(),
                    Some(true) => "yes".into(),
                    Some(false) => "MISSED".into(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            // Text columns left-aligned, numbers right-aligned.
            if i <= 1 || i == 5 {
                let _ = write!(l, "{cell:<w$}");
            } else {
                let _ = write!(l, "{cell:>w$}");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, &header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(
        &mut out,
        &rule.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    for (row, f) in rows.iter().zip(figures) {
        line(
            &mut out,
            &row.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        if !f.extra.is_empty() {
            let _ = writeln!(out, "    ({})", f.extra);
        }
    }
    out
}

/// A JSON string literal for `s` (RFC 8259 escaping).
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number, or `null` for NaN and infinities (which JSON cannot carry).
pub fn json_num(x: f64) -> String {
    if x.is_finite() {
        // `{}` of an f64 never uses exponent notation, and is valid JSON.
        format!("{x}")
    } else {
        "null".into()
    }
}

fn json_stats(s: &Stats) -> String {
    format!(
        "{{\"median\": {}, \"min\": {}, \"max\": {}, \"runs\": {}}}",
        json_num(s.median),
        json_num(s.min),
        json_num(s.max),
        s.runs
    )
}

/// The figures (and free-form notes and settings) as a JSON document.
pub fn json(figures: &[Figure], notes: &[String], settings: &[(&str, String)]) -> String {
    let mut out = String::from("{\n  \"settings\": {");
    for (i, (k, v)) in settings.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(out, "{sep}\n    {}: {}", json_str(k), v);
    }
    out.push_str("\n  },\n  \"figures\": [");
    for (i, f) in figures.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let goal = f
            .goal
            .map_or("null".into(), |g| json_str(&g.describe(f.unit)));
        let met = f.goal_met().map_or("null".into(), |m| m.to_string());
        let _ = write!(
            out,
            "{sep}\n    {{\"name\": {}, \"unit\": {}, \"p2pchat\": {}, \"baseline\": {}, \
             \"ratio\": {}, \"goal\": {}, \"goal_met\": {}, \"extra\": {}}}",
            json_str(&f.name),
            json_str(f.unit),
            json_stats(&f.p2pchat),
            f.baseline.as_ref().map_or("null".into(), json_stats),
            f.ratio.map_or("null".into(), json_num),
            goal,
            met,
            json_str(&f.extra),
        );
    }
    out.push_str("\n  ],\n  \"notes\": [");
    for (i, n) in notes.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(out, "{sep}\n    {}", json_str(n));
    }
    out.push_str("\n  ]\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max() {
        let s = Stats::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max, s.runs), (2.0, 1.0, 3.0, 3));
        let s = Stats::of(&[4.0, 1.0, 2.0, 3.0]);
        assert_eq!(s.median, 2.5);
        assert_eq!(Stats::of(&[]).runs, 0);
    }

    #[test]
    fn json_escaping() {
        assert_eq!(json_str("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        assert_eq!(json_num(f64::NAN), "null");
        assert_eq!(json_num(1.5), "1.5");
        assert_eq!(json_num(1e21), "1000000000000000000000");
    }

    #[test]
    fn goals() {
        let p = Stats::of(&[80.0]);
        let b = Stats::of(&[100.0]);
        let f = Figure::compared("x", "q/s", p, b).goal(Goal::RatioAtLeast(0.8));
        assert_eq!(f.goal_met(), Some(true));
        let f = Figure::single("y", "MB", p).goal(Goal::Below(80.0));
        assert_eq!(f.goal_met(), Some(false));
        assert!(table(std::slice::from_ref(&f)).contains("MISSED"));
        assert!(json(&[f], &[], &[]).contains("\"goal_met\": false"));
        // Lower is better: 120 us against 100 us is a ratio of 1.2.
        let f = Figure::compared("z", "us", Stats::of(&[120.0]), b).goal(Goal::RatioAtMost(1.5));
        assert_eq!(f.goal_met(), Some(true));
        assert!(table(std::slice::from_ref(&f)).contains("<= 1.50x baseline"));
        let f = Figure::single("r", "msg/s", p).goal(Goal::AtLeast(100.0));
        assert_eq!(f.goal_met(), Some(false));
        let f = Figure::single("c", "ms", p).goal(Goal::Check {
            what: "reads no file contents",
            met: true,
        });
        assert_eq!(f.goal_met(), Some(true));
        assert!(table(&[f]).contains("reads no file contents"));
    }
}
