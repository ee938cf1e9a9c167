//! The result table every benchmark ends with: one figure a line, with its baseline, ratio,
//! target and verdict.

use std::fmt::Write as _;

/// What a figure's ratio must be to pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Passes when the ratio is at least this (a rate against its ceiling); shown `>= t`.
    AtLeast(f64),
    /// Passes when the ratio is at most this (a time or a size against its baseline); shown
    /// `<= t`.
    AtMost(f64),
}

impl Target {
    fn passes(self, ratio: f64) -> bool {
        match self {
            Target::AtLeast(target) => ratio >= target,
            Target::AtMost(target) => ratio <= target,
        }
    }
}

/// One line of the result table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    figure: String,
    value: String,
    baseline: String,
    ratio: Option<f64>,
    target: Option<Target>,
}

impl Row {
    /// A ceiling: a value with no baseline, ratio or target; its result is `-`.
    pub fn ceiling(figure: impl Into<String>, value: impl Into<String>) -> Row {
        Row {
            figure: figure.into(),
            value: value.into(),
            baseline: "-".to_owned(),
            ratio: None,
            target: None,
        }
    }

    /// A figure set against a baseline, usually with `ratio` = value / baseline. With a
    /// target its result is `PASS` or `FAIL`; without one it is `info` (shown for context,
    /// judged by nothing).
    pub fn compared(
        figure: impl Into<String>,
        value: impl Into<String>,
        baseline: impl Into<String>,
        ratio: f64,
        target: Option<Target>,
    ) -> Row {
        Row {
            figure: figure.into(),
            value: value.into(),
            baseline: baseline.into(),
            ratio: Some(ratio),
            target,
        }
    }

    /// `PASS` or `FAIL` against the target (a NaN ratio fails), `info` for a ratio without a
    /// target, `-` for a ceiling.
    pub fn result(&self) -> &'static str {
        match (self.ratio, self.target) {
            (Some(ratio), Some(target)) if target.passes(ratio) => "PASS",
            (Some(_), Some(_)) => "FAIL",
            (Some(_), None) => "info",
            (None, _) => "-",
        }
    }
}

/// The rows as a table: a header line, a rule, and one line per row, each ending in a
/// newline; every column is as wide as its widest cell.
pub(crate) fn table_text(rows: &[Row]) -> String {
    let figure_w = rows
        .iter()
        .map(|r| r.figure.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let value_w = rows.iter().map(|r| r.value.len()).max().unwrap_or(0).max(5);
    let baseline_w = rows
        .iter()
        .map(|r| r.baseline.len())
        .max()
        .unwrap_or(0)
        .max(8);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<figure_w$}  {:>value_w$}  {:<baseline_w$}  {:>7}  {:>8}  result",
        "figure", "value", "baseline", "ratio", "target"
    );
    let _ = writeln!(
        out,
        "{}",
        "-".repeat(figure_w + value_w + baseline_w + 7 + 8 + 6 + 10)
    );
    for row in rows {
        let ratio = row.ratio.map_or("-".to_owned(), |r| format!("{r:.3}"));
        let target = match row.target {
            Some(Target::AtLeast(t)) => format!(">= {t:.2}"),
            Some(Target::AtMost(t)) => format!("<= {t:.2}"),
            None => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<figure_w$}  {:>value_w$}  {:<baseline_w$}  {ratio:>7}  {target:>8}  {}",
            row.figure,
            row.value,
            row.baseline,
            row.result()
        );
    }
    out
}

/// Prints the rows on stdout as a table: a header line, a rule, and one line per row, every
/// column as wide as its widest cell.
pub fn print_table(rows: &[Row]) {
    print!("{}", table_text(rows));
}

/// A rate with three significant-ish digits: `1.23 M/s`, `4.56 k/s`, `7.8 /s`.
pub fn fmt_rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2} M/s", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.2} k/s", per_second / 1e3)
    } else {
        format!("{per_second:.1} /s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_target() {
        let row = |ratio, target| Row::compared("f", "v", "b", ratio, target);
        assert_eq!(row(1.0, Some(Target::AtLeast(0.9))).result(), "PASS");
        assert_eq!(row(0.8, Some(Target::AtLeast(0.9))).result(), "FAIL");
        assert_eq!(row(1.4, Some(Target::AtMost(1.5))).result(), "PASS");
        assert_eq!(row(1.6, Some(Target::AtMost(1.5))).result(), "FAIL");
        assert_eq!(row(f64::NAN, Some(Target::AtMost(1.5))).result(), "FAIL");
        assert_eq!(row(6.0, None).result(), "info");
        assert_eq!(Row::ceiling("C3", "1 M/s").result(), "-");
    }

    #[test]
    fn the_table_lines_up() {
        let text = table_text(&[
            Row::ceiling("C1 4 KiB pwrite + fdatasync", "1.00 k/s"),
            Row::compared("S2", "1.21", "target", 1.21, Some(Target::AtMost(1.5))),
            Row::compared(
                "W1",
                "4.10 M/s",
                "C3 40 M/s",
                0.1025,
                Some(Target::AtLeast(0.1)),
            ),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with("figure "), "{text}");
        assert!(lines[0].ends_with("  result"), "{text}");
        assert!(lines[1].chars().all(|c| c == '-'), "{text}");
        assert!(lines[2].ends_with("        -         -  -"), "{text}");
        assert!(lines[3].ends_with("1.210   <= 1.50  PASS"), "{text}");
        assert!(lines[4].ends_with("0.102   >= 0.10  PASS"), "{text}");
        // The value column is right-aligned to its widest cell.
        let value_end = |line: &str, value: &str| line.find(value).unwrap() + value.len();
        assert_eq!(
            value_end(lines[2], "1.00 k/s"),
            value_end(lines[4], "4.10 M/s")
        );
    }

    #[test]
    fn rates_print_with_units() {
        assert_eq!(fmt_rate(2.5e6), "2.50 M/s");
        assert_eq!(fmt_rate(447_000.0), "447.00 k/s");
        assert_eq!(fmt_rate(12.0), "12.0 /s");
    }
}
