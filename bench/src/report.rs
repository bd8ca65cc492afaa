//! The report: a table per metric on stdout, and the same rows as JSON.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::workloads::{Better, Cell, Row};

/// The system every figure is compared with first.
pub const DEPOT: &str = "depot";
/// The ceiling.
pub const RAW_TCP: &str = "raw-tcp";
/// Python's own manager, with the same Python clients as `py-on-depot`.
pub const PYTHON: &str = "python";

/// `row`'s median divided by `reference`'s median for the same metric, when both exist.
pub fn ratio(rows: &[Row], row: &Row, reference: &str) -> Option<f64> {
    let value = median(row)?;
    let base = rows
        .iter()
        .find(|r| r.system == reference && r.metric.key == row.metric.key)
        .and_then(median)?;
    (base != 0.0).then(|| value / base)
}

fn median(row: &Row) -> Option<f64> {
    match row.cell {
        Cell::Value { median, .. } => Some(median),
        _ => None,
    }
}

/// The tables, one per metric in the order the rows came.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::new();
    let mut keys: Vec<&str> = Vec::new();
    for row in rows {
        if !keys.contains(&row.metric.key.as_str()) {
            keys.push(&row.metric.key);
        }
    }
    for key in keys {
        let group: Vec<&Row> = rows.iter().filter(|r| r.metric.key == key).collect();
        let metric = &group[0].metric;
        let better = match metric.better {
            Better::Higher => "higher is better",
            Better::Lower => "lower is better",
        };
        out += &format!("\n{} — {}, {better}\n", metric.label, metric.unit);
        out += &format!(
            "  {:<18} {:>12} {:<14} {:>23} {:>9} {:>10} {:>9}  {}\n",
            "system",
            "value",
            "unit",
            "spread (min–max)",
            "vs depot",
            "vs raw-tcp",
            "vs python",
            "note"
        );
        for row in group {
            let line = match &row.cell {
                Cell::Value {
                    median, min, max, ..
                } => format!(
                    "{:>12} {:<14} {:>23} {:>9} {:>10} {:>9}  {}",
                    number(*median),
                    row.metric.unit,
                    format!("{}–{}", number(*min), number(*max)),
                    ratio(rows, row, DEPOT).map_or("—".into(), times),
                    ratio(rows, row, RAW_TCP).map_or("—".into(), times),
                    ratio(rows, row, PYTHON).map_or("—".into(), times),
                    row.note.as_deref().unwrap_or(""),
                ),
                Cell::Skipped(reason) => format!("skipped: {reason}"),
                Cell::Failed(error) => format!("FAILED: {error}"),
            };
            out += &format!("  {:<18} {line}\n", row.system);
        }
    }
    out
}

/// The rows as a JSON array.
pub fn to_json(rows: &[Row]) -> Value {
    let objects = rows.iter().map(|row| {
        let (status, value, min, max, runs, reason) = match &row.cell {
            Cell::Value { median, min, max, runs } => ("ok", json!(median), json!(min), json!(max), runs.clone(), None),
            Cell::Skipped(reason) => ("skipped", Value::Null, Value::Null, Value::Null, vec![], Some(reason)),
            Cell::Failed(error) => ("failed", Value::Null, Value::Null, Value::Null, vec![], Some(error)),
        };
        json!({
            "workload": row.metric.key,
            "label": row.metric.label,
            "system": row.system,
            "status": status,
            "value": value,
            "unit": row.metric.unit,
            "better": match row.metric.better { Better::Higher => "higher", Better::Lower => "lower" },
            "min": min,
            "max": max,
            "runs": runs.len(),
            "run_values": runs,
            "ratio_vs_depot": ratio(rows, row, DEPOT),
            "ratio_vs_raw_tcp": ratio(rows, row, RAW_TCP),
            "ratio_vs_python": ratio(rows, row, PYTHON),
            "note": row.note,
            "reason": reason,
        })
    });
    Value::Array(objects.collect())
}

/// Write [`to_json`] to `path`.
pub fn write_json(path: &Path, rows: &[Row]) -> Result<()> {
    let text = serde_json::to_string_pretty(&to_json(rows))?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Three significant figures at most, thousands grouped.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let magnitude = v.abs();
    if magnitude >= 1000.0 {
        let digits = magnitude.log10().floor() as i32 + 1;
        let step = 10f64.powi((digits - 3).max(0));
        let rounded = ((v / step).round() * step) as i64;
        let sign = if rounded < 0 { "-" } else { "" };
        format!(
            "{sign}{}",
            crate::workloads::group(rounded.unsigned_abs() as usize)
        )
    } else if magnitude >= 100.0 {
        format!("{v:.0}")
    } else if magnitude >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn times(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}×")
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(number(42_117.4), "42,100");
        assert_eq!(number(4_412.0), "4,410");
        assert_eq!(number(236.4), "236");
        assert_eq!(number(23.64), "23.6");
        assert_eq!(number(1.234), "1.23");
        assert_eq!(number(76_543_210.0), "76,500,000");
    }

    #[test]
    fn ratios() {
        assert_eq!(times(0.1234), "0.12×");
        assert_eq!(times(1234.0), "1234×");
    }
}
