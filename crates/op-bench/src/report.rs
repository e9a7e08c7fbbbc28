//! Figures and how they are printed.

use serde::Serialize;

/// One measured figure with the conditions it was measured under.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub conditions: String,
}

impl Figure {
    pub fn new(name: &str, value: f64, unit: &str, conditions: impl Into<String>) -> Figure {
        Figure {
            name: name.into(),
            value,
            unit: unit.into(),
            conditions: conditions.into(),
        }
    }
}

pub fn print(figures: &[Figure], json: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if json {
        let text = serde_json::to_string_pretty(figures).unwrap_or_default();
        writeln!(out, "{text}")?;
    } else {
        for f in figures {
            writeln!(
                out,
                "{} {} {}  {}",
                f.name,
                round(f.value),
                f.unit,
                f.conditions
            )?;
        }
    }
    out.flush()
}

fn round(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The median, 99th percentile and maximum of `samples` in `unit`, named `{prefix}_p50`,
/// `{prefix}_p99` and `{prefix}_max`.
pub fn spread(prefix: &str, samples: &[f64], unit: &str, conditions: &str) -> Vec<Figure> {
    [("p50", 50.0), ("p99", 99.0), ("max", 100.0)]
        .into_iter()
        .map(|(suffix, p)| {
            Figure::new(
                &format!("{prefix}_{suffix}"),
                percentile(samples, p),
                unit,
                conditions,
            )
        })
        .collect()
}

/// The `p`-th percentile (0..=100) of `values` by nearest rank; `values` need not be sorted.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::{percentile, spread};

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
    }

    #[test]
    fn spread_names_median_p99_and_max() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let f = spread("x", &v, "ms", "c");
        let got: Vec<(&str, f64)> = f.iter().map(|f| (f.name.as_str(), f.value)).collect();
        assert_eq!(got, [("x_p50", 50.0), ("x_p99", 99.0), ("x_max", 100.0)]);
        assert!(f.iter().all(|f| f.unit == "ms" && f.conditions == "c"));
    }
}
