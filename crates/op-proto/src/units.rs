//! Sizes and durations as people write them, with one meaning everywhere.
//!
//! Both daemons' config, the CLI's flags and anything else that takes `64KiB` or `5m` parse it
//! here, so the same string is the same value in every process. This module owns the grammar and
//! the display of both; it leaves "which key, which default" to each caller.
//!
//! The conventions (docs/config.md says the same):
//! - sizes: a number of bytes, or a number and a unit. `KiB`, `MiB`, `GiB`, `TiB` are powers of
//!   1024; `kB` (or `k`), `MB`, `GB`, `TB` are powers of 1000, as in SI. Units are
//!   case-insensitive, so `64kb` is 64,000 bytes and `64kib` is 65,536.
//! - durations: a bare number is seconds (`30`), or numbers with units, optionally combined
//!   (`30s`, `5m`, `1h`, `30d`, `2w`, `1h30m`, `500ms`). Months and years are refused: their
//!   length depends on the calendar.

use std::fmt;
use std::time::Duration;

/// A size or duration that could not be read; the message says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitError {
    message: String,
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UnitError {}

fn err(message: String) -> UnitError {
    UnitError { message }
}

/// Parses `65536`, `64KiB`, `64kB`, `1 MiB`, `20MB`, `2GiB` into bytes.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        err(format!(
            "{text:?} is not a size; write a number of bytes or e.g. 64KiB, 1MiB, 20MB"
        ))
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" | "ki" => 1 << 10,
        "mb" | "m" => 1_000_000,
        "mib" | "mi" => 1 << 20,
        "gb" | "g" => 1_000_000_000,
        "gib" | "gi" => 1 << 30,
        "tb" | "t" => 1_000_000_000_000,
        "tib" | "ti" => 1 << 40,
        other => {
            return Err(err(format!(
                "{text:?}: unknown size unit {other:?}; use B, KiB, MiB, GiB, TiB (1024) or kB, MB, GB, TB (1000)"
            )));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| err(format!("{text:?} is too large")))
}

/// Parses `30` (seconds), `30s`, `5m`, `1h`, `30d`, `2w`, `500ms`, `1h30m` or `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let t = text.trim();
    let bad = || {
        err(format!(
            "{text:?} is not a duration; write seconds (30) or e.g. 30s, 5m, 1h, 30d"
        ))
    };
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = rest[digits..].trim_start();
        let letters = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..letters];
        rest = rest[letters..].trim_start();
        let one = match unit {
            "ms" | "msec" | "millis" => Duration::from_millis(1),
            "s" | "sec" | "secs" | "second" | "seconds" => Duration::from_secs(1),
            "m" | "min" | "mins" | "minute" | "minutes" => Duration::from_secs(60),
            "h" | "hr" | "hrs" | "hour" | "hours" => Duration::from_secs(3600),
            "d" | "day" | "days" => Duration::from_secs(86_400),
            "w" | "week" | "weeks" => Duration::from_secs(7 * 86_400),
            "" => {
                return Err(err(format!(
                    "{text:?}: a number without a unit is only allowed alone (seconds); write e.g. 1h30m"
                )));
            }
            other => {
                return Err(err(format!(
                    "{text:?}: unknown duration unit {other:?}; use ms, s, m, h, d or w"
                )));
            }
        };
        let part = u32::try_from(n)
            .ok()
            .and_then(|n| one.checked_mul(n))
            .ok_or_else(|| err(format!("{text:?} is too long")))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| err(format!("{text:?} is too long")))?;
    }
    Ok(total)
}

/// `1536` → `1.5 KiB`, `12` → `12 B`: binary units, as the daemons report sizes.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `5400 s` → `1h30m`, `0` → `0s`, `250 ms` → `250ms`: the shortest string [`parse_duration`]
/// reads back as the same whole milliseconds.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, len) in [
        ("w", 7 * 86_400_000u128),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= len {
            out.push_str(&format!("{}{unit}", ms / len));
            ms %= len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_binary_and_decimal() {
        for (text, want) in [
            ("65536", 65_536),
            ("64KiB", 65_536),
            ("64kib", 65_536),
            ("64kb", 64_000),
            ("64kB", 64_000),
            ("64k", 64_000),
            ("1 MiB", 1 << 20),
            ("20MB", 20_000_000),
            ("1gib", 1 << 30),
            ("2TiB", 2 << 40),
            ("0", 0),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        for bad in ["", "MiB", "12 parsecs", "1.5MiB", "-1", "99999999999TiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_bare_seconds_and_units() {
        for (text, want) in [
            ("30", 30),
            ("30s", 30),
            ("5m", 300),
            ("1h", 3600),
            ("30d", 30 * 86_400),
            ("2w", 14 * 86_400),
            ("1h30m", 5400),
            ("1h 30m", 5400),
            (" 45 sec ", 45),
            ("10 minutes", 600),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(want)),
                "{text}"
            );
        }
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        for bad in ["", "soon", "1h 30", "5 parsecs", "1y", "1.5h", "-5s", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let msg = parse_duration("1y").unwrap_err().to_string();
        assert!(msg.contains("ms, s, m, h, d or w"), "{msg}");
    }

    #[test]
    fn display_reads_back() {
        assert_eq!(format_size(12), "12 B");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(100 << 20), "100.0 MiB");
        for secs in [0u64, 1, 59, 60, 3600, 5400, 86_400, 30 * 86_400, 694_861] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{secs}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }
}
