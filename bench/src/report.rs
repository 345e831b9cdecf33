//! Rows, percentiles, the printed table and `bench/results.json` (this run, plus the run
//! before it kept as `previous`, so a regression shows as a change in the table).

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

/// Reasons up to this long are printed in the figure column.
const SHORT_NOTE: usize = 40;

/// A change beyond this share of the previous figure is flagged in the table. Two runs of the
/// same code on a 2-core machine differ by up to ~25% (cold-start p90s, moto-bound rows), so a
/// tighter threshold would mostly flag noise.
pub const REGRESSION_THRESHOLD_PCT: f64 = 25.0;

/// Which direction is an improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Lower,
    Higher,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Stable key: rows of two runs are matched by it.
    pub id: String,
    pub section: String,
    pub name: String,
    /// `None` when nothing was measured; `note` says why.
    pub value: Option<f64>,
    pub unit: String,
    pub better: Better,
    /// What the figure is measured against, or what it is.
    pub anchor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default)]
    pub previous: Option<f64>,
    #[serde(default)]
    pub change_pct: Option<f64>,
}

impl Row {
    pub fn measured(
        id: impl Into<String>,
        section: &str,
        name: impl Into<String>,
        value: f64,
        unit: &str,
        better: Better,
        anchor: impl Into<String>,
    ) -> Row {
        Row {
            id: id.into(),
            section: section.to_owned(),
            name: name.into(),
            value: Some(value),
            unit: unit.to_owned(),
            better,
            anchor: anchor.into(),
            note: None,
            previous: None,
            change_pct: None,
        }
    }

    /// A row with no figure: not built yet, skipped, or failed (`note` says which).
    pub fn missing(
        id: impl Into<String>,
        section: &str,
        name: impl Into<String>,
        unit: &str,
        better: Better,
        anchor: impl Into<String>,
        note: impl Into<String>,
    ) -> Row {
        Row {
            id: id.into(),
            section: section.to_owned(),
            name: name.into(),
            value: None,
            unit: unit.to_owned(),
            better,
            anchor: anchor.into(),
            note: Some(note.into()),
            previous: None,
            change_pct: None,
        }
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Row {
        self.note = Some(note.into());
        self
    }

    /// "worse" / "better" when the change passes the threshold in either direction.
    pub fn verdict(&self) -> Option<&'static str> {
        let change = self.change_pct?;
        if change.abs() < REGRESSION_THRESHOLD_PCT {
            return None;
        }
        let improved = match self.better {
            Better::Lower => change < 0.0,
            Better::Higher => change > 0.0,
        };
        Some(if improved { "better" } else { "WORSE" })
    }
}

/// Order statistics of a sample (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// Nearest-rank percentile of an ascending slice; `None` for an empty one.
pub fn percentile(sorted: &[f64], pct: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted.get(index).copied()
}

pub fn summarize(values: &[f64]) -> Option<Summary> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let mean = sorted.iter().sum::<f64>() / n.max(1) as f64;
    Some(Summary {
        n,
        min: *sorted.first()?,
        p50: percentile(&sorted, 50.0)?,
        p90: percentile(&sorted, 90.0)?,
        p99: percentile(&sorted, 99.0)?,
        max: *sorted.last()?,
        mean,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub date: String,
    pub cores: usize,
    pub machine: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Seconds the whole bench took (the build excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_seconds: Option<f64>,
    pub rows: Vec<Row>,
    /// The run before this one, as it was (its own `previous` dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Box<Results>>,
}

/// Reads an earlier results file; a missing or unreadable one is simply no history.
pub fn load_previous(path: &Path) -> Option<Results> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str::<Results>(&text) {
        Ok(results) => Some(results),
        Err(error) => {
            eprintln!("bench: ignoring {} ({error})", path.display());
            None
        }
    }
}

/// Fills `previous` and `change_pct` of each row from the same row of the earlier run.
pub fn attach_previous(rows: &mut [Row], prior: Option<&Results>) {
    let Some(prior) = prior else { return };
    for row in rows.iter_mut() {
        let before = prior.rows.iter().find(|p| p.id == row.id).and_then(|p| p.value);
        row.previous = before;
        row.change_pct = match (row.value, before) {
            (Some(now), Some(then)) if then != 0.0 => Some((now - then) / then.abs() * 100.0),
            _ => None,
        };
    }
}

/// Writes through a temporary file, so an interrupted run never leaves half a file.
pub fn write_results(path: &Path, results: &Results) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut text = serde_json::to_string_pretty(results)?;
    text.push('\n');
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A figure with as many decimals as its size deserves.
pub fn format_value(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1000.0 {
        let whole = format!("{value:.0}");
        group_thousands(&whole)
    } else if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 0.1 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

fn group_thousands(digits: &str) -> String {
    let (sign, digits) = digits.strip_prefix('-').map_or(("", digits), |rest| ("-", rest));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn change_cell(row: &Row) -> String {
    match (row.change_pct, row.verdict()) {
        (Some(change), Some(verdict)) => format!("{change:+.1}% {verdict}"),
        (Some(change), None) => format!("{change:+.1}%"),
        (None, _) => "-".to_owned(),
    }
}

/// The one table `make bench` prints: row, figure, unit, compared to, previous, change.
pub fn render_table(results: &Results) -> String {
    let headers = ["row", "figure", "unit", "compared to / what it is", "previous", "change"];
    let mut cells: Vec<(Option<&str>, [String; 6])> = Vec::new();
    let mut section: Option<&str> = None;
    for row in &results.rows {
        let heading = (section != Some(row.section.as_str())).then_some(row.section.as_str());
        section = Some(row.section.as_str());
        // A short reason stands in the figure's place; a long one goes beside the anchor.
        let (figure, anchor) = match (row.value, &row.note) {
            (Some(value), Some(note)) => (format_value(value), format!("{} [{note}]", row.anchor)),
            (Some(value), None) => (format_value(value), row.anchor.clone()),
            (None, Some(note)) if note.chars().count() <= SHORT_NOTE => (note.clone(), row.anchor.clone()),
            (None, Some(note)) => {
                let head = note.split(':').next().unwrap_or("failed").to_owned();
                (head, format!("{} [{note}]", row.anchor))
            }
            (None, None) => ("-".to_owned(), row.anchor.clone()),
        };
        let previous = row.previous.map_or_else(|| "-".to_owned(), format_value);
        cells.push((
            heading,
            [row.name.clone(), figure, row.unit.clone(), anchor, previous, change_cell(row)],
        ));
    }
    let mut widths = headers.map(str::len);
    for (_, line) in &cells {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cols: [&str; 6]| {
        let mut out = String::new();
        for (i, (col, width)) in cols.iter().zip(widths).enumerate() {
            let pad = width.saturating_sub(col.chars().count());
            // Figures and previous figures read best right-aligned.
            if i == 1 || i == 4 {
                out.push_str(&" ".repeat(pad));
                out.push_str(col);
            } else {
                out.push_str(col);
                out.push_str(&" ".repeat(pad));
            }
            out.push_str("  ");
        }
        out.trim_end().to_owned()
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "DotMac Platform bench — {} — {} cores — {}",
        results.date, results.cores, results.machine
    );
    if let Some(cpu) = &results.cpu {
        let _ = writeln!(out, "cpu: {cpu}");
    }
    match &results.previous {
        Some(prior) => {
            let _ = writeln!(
                out,
                "previous: {} on {} cores; change beyond ±{REGRESSION_THRESHOLD_PCT:.0}% is marked",
                prior.date, prior.cores
            );
        }
        None => {
            let _ = writeln!(out, "previous: none (first run on record)");
        }
    }
    let header = line(headers);
    let _ = writeln!(out, "{header}");
    let _ = writeln!(out, "{}", "-".repeat(header.chars().count()));
    for (heading, cols) in &cells {
        if let Some(heading) = heading {
            let _ = writeln!(out, "[{heading}]");
        }
        let _ = writeln!(out, "{}", line([&cols[0], &cols[1], &cols[2], &cols[3], &cols[4], &cols[5]]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, value: Option<f64>, better: Better) -> Row {
        match value {
            Some(v) => Row::measured(id, "s", id, v, "ms", better, "anchor"),
            None => Row::missing(id, "s", id, "ms", better, "anchor", "not yet built (issue: billing/usage)"),
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(50.0));
        assert_eq!(percentile(&sorted, 99.0), Some(99.0));
        assert_eq!(percentile(&sorted, 100.0), Some(100.0));
        assert_eq!(percentile(&sorted, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);

        let summary = summarize(&[3.0, 1.0, 2.0, f64::NAN, 4.0]).expect("summary");
        assert_eq!(summary.n, 4);
        assert_eq!((summary.min, summary.p50, summary.max), (1.0, 2.0, 4.0));
        assert_eq!(summary.mean, 2.5);
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn changes_against_the_previous_run_are_flagged_by_direction() {
        let prior = Results {
            date: "then".into(),
            cores: 2,
            machine: "m".into(),
            cpu: None,
            run_seconds: None,
            rows: vec![
                row("latency", Some(10.0), Better::Lower),
                row("throughput", Some(100.0), Better::Higher),
                row("steady", Some(50.0), Better::Lower),
                row("gone", Some(1.0), Better::Lower),
            ],
            previous: None,
        };
        let mut rows = vec![
            row("latency", Some(13.0), Better::Lower),
            row("throughput", Some(70.0), Better::Higher),
            row("steady", Some(52.0), Better::Lower),
            row("gone", None, Better::Lower),
            row("new", Some(3.0), Better::Lower),
        ];
        attach_previous(&mut rows, Some(&prior));

        assert_eq!(rows[0].previous, Some(10.0));
        assert!((rows[0].change_pct.expect("change") - 30.0).abs() < 1e-9);
        assert_eq!(rows[0].verdict(), Some("WORSE"));
        assert!((rows[1].change_pct.expect("change") + 30.0).abs() < 1e-9);
        assert_eq!(rows[1].verdict(), Some("WORSE"), "less throughput is worse");
        assert_eq!(rows[2].verdict(), None, "4% is inside the noise threshold");
        let mut noisy = vec![row("latency", Some(12.0), Better::Lower)];
        attach_previous(&mut noisy, Some(&prior));
        assert_eq!(noisy[0].verdict(), None, "20% is noise on this kind of machine");
        assert_eq!((rows[3].previous, rows[3].change_pct), (Some(1.0), None));
        assert_eq!((rows[4].previous, rows[4].change_pct), (None, None));

        let mut faster = vec![row("latency", Some(5.0), Better::Lower)];
        attach_previous(&mut faster, Some(&prior));
        assert_eq!(faster[0].verdict(), Some("better"));
    }

    #[test]
    fn the_table_shows_missing_rows_by_their_reason_and_the_change() {
        let mut rows = vec![row("latency", Some(13.0), Better::Lower), row("billing", None, Better::Lower)];
        let prior = Results {
            date: "then".into(),
            cores: 2,
            machine: "m".into(),
            cpu: None,
            run_seconds: None,
            rows: vec![row("latency", Some(10.0), Better::Lower)],
            previous: None,
        };
        attach_previous(&mut rows, Some(&prior));
        let results = Results {
            date: "now".into(),
            cores: 2,
            machine: "m".into(),
            cpu: None,
            run_seconds: None,
            rows,
            previous: Some(Box::new(prior)),
        };
        let table = render_table(&results);
        assert!(table.contains("not yet built (issue: billing/usage)"), "{table}");
        assert!(table.contains("+30.0% WORSE"), "{table}");
        assert!(table.contains("previous: then on 2 cores"), "{table}");
        assert_eq!(format_value(12345.6), "12,346");
        assert_eq!(format_value(0.0123), "0.012");
        assert_eq!(format_value(-1234.0), "-1,234");
    }

    #[test]
    fn results_round_trip_through_json() {
        let results = Results {
            date: "2026-01-01T00:00:00Z".into(),
            cores: 2,
            machine: "Linux x86_64".into(),
            cpu: Some("cpu".into()),
            run_seconds: Some(1.5),
            rows: vec![row("a", Some(1.0), Better::Higher), row("b", None, Better::Lower)],
            previous: None,
        };
        let text = serde_json::to_string(&results).expect("json");
        let back: Results = serde_json::from_str(&text).expect("parse");
        assert_eq!(back.rows, results.rows);
        assert!(!text.contains("\"previous\":{"), "no nested history: {text}");
    }
}
