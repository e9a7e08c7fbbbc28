//! Cron schedules with the seed's meaning, evaluated in a time zone.
//!
//! The seed used gorhill/cronexpr, so its field layout is ours: 7 fields are
//! `sec min hour dom month dow year`, 6 fields are `min hour dom month dow year` (not Quartz's
//! seconds-first form), 5 fields are classic crontab. Day-of-week runs 0-7 with 0 and 7 = Sunday,
//! and a restricted day-of-month and day-of-week are OR-ed (Vixie). We rewrite every form to 7
//! fields and hand it to croner, which does the calendar search.
//!
//! Time semantics, defined here once:
//! - [`Schedule::next_after`] is a pure function of its input: the first fire strictly after `t`.
//! - A local time that does not exist (spring forward) fires at the next valid instant.
//! - A fixed local time that happens twice (fall back) fires once, at its first occurrence.
//!   Interval schedules (`*/10 * * * * * *`) keep their real-time rhythm through the repeated hour.
//! - A schedule that never fires again returns `None`; saving such a job is an error.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Local, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Where a schedule's wall clock lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// The local zone of the machine evaluating the schedule (the agent).
    Local,
    Named(Tz),
}

impl Zone {
    /// Parses an IANA zone name (case-insensitive) or `Local`.
    pub fn parse(name: &str) -> Option<Zone> {
        let name = name.trim();
        if name.eq_ignore_ascii_case("local") {
            return Some(Zone::Local);
        }
        Tz::from_str(name)
            .ok()
            .or_else(|| {
                chrono_tz::TZ_VARIANTS
                    .iter()
                    .find(|tz| tz.name().eq_ignore_ascii_case(name))
                    .copied()
            })
            .map(Zone::Named)
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Local => f.write_str("Local"),
            Zone::Named(tz) => f.write_str(tz.name()),
        }
    }
}

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("cron expression is empty")]
    Empty,
    #[error(
        "cron expression has {0} fields; expected 5, 6 or 7 (7 = sec min hour day-of-month month day-of-week year)"
    )]
    FieldCount(usize),
    #[error("unknown alias {0:?}; use @yearly, @annually, @monthly, @weekly, @daily or @hourly")]
    UnknownAlias(String),
    #[error("cron expression {expr:?}: {field} field {value:?} is invalid: {reason}")]
    Field {
        expr: String,
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("cron expression {expr:?} is invalid: {reason}")]
    Invalid { expr: String, reason: String },
    #[error(
        "cron expression {0:?} never fires again (a past year, or a date that does not exist such as 30 February)"
    )]
    NeverFires(String),
}

const FIELD_NAMES: [&str; 7] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
    "year",
];

/// A parsed cron expression bound to a zone.
#[derive(Clone)]
pub struct Schedule {
    expr: String,
    normalized: String,
    zone: Zone,
    cron: Cron,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("expr", &self.expr)
            .field("normalized", &self.normalized)
            .field("zone", &self.zone)
            .finish()
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.normalized == other.normalized && self.zone == other.zone
    }
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Required)
        .sloppy_ranges(true)
        .dom_and_dow(false)
        .build()
}

/// Rewrites any accepted form to the 7-field form.
pub fn normalize(expr: &str) -> Result<String, ScheduleError> {
    let expr = expr.trim();
    if expr.is_empty() {
        return Err(ScheduleError::Empty);
    }
    if expr.starts_with('@') {
        let alias = expr.to_ascii_lowercase();
        let seven = match alias.as_str() {
            "@yearly" | "@annually" => "0 0 0 1 1 * *",
            "@monthly" => "0 0 0 1 * * *",
            "@weekly" => "0 0 0 * * 0 *",
            "@daily" | "@midnight" => "0 0 0 * * * *",
            "@hourly" => "0 0 * * * * *",
            _ => return Err(ScheduleError::UnknownAlias(expr.to_string())),
        };
        return Ok(seven.to_string());
    }
    let fields: Vec<&str> = expr.split_whitespace().collect();
    match fields.len() {
        5 => Ok(format!("0 {} *", fields.join(" "))),
        6 => Ok(format!("0 {}", fields.join(" "))),
        7 => Ok(fields.join(" ")),
        n => Err(ScheduleError::FieldCount(n)),
    }
}

impl Schedule {
    /// Parses an expression in any accepted form. This checks syntax only; use
    /// [`Schedule::next_after`] (or [`Schedule::check_fires`]) to learn whether it fires again.
    pub fn parse(expr: &str, zone: Zone) -> Result<Schedule, ScheduleError> {
        let normalized = normalize(expr)?;
        let cron = match parser().parse(&normalized) {
            Ok(cron) => cron,
            Err(err) => return Err(explain(expr, &normalized, err)),
        };
        Ok(Schedule {
            expr: expr.trim().to_string(),
            normalized,
            zone,
            cron,
        })
    }

    /// The expression as written.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The 7-field form.
    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    pub fn zone(&self) -> Zone {
        self.zone
    }

    /// The first fire strictly after `t`, or `None` when the schedule never fires again.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.zone {
            Zone::Local => self.next_in(&t.with_timezone(&Local)),
            Zone::Named(tz) => self.next_in(&t.with_timezone(&tz)),
        }
    }

    fn next_in<Z: TimeZone>(&self, t: &DateTime<Z>) -> Option<DateTime<Utc>> {
        // croner works on whole seconds: start from the second `t` falls in, so a fire in the same
        // second but after `t`'s fraction is not returned twice.
        let floor =
            t.clone() - chrono::Duration::nanoseconds(i64::from(t.timestamp_subsec_nanos()));
        let next = self.cron.find_next_occurrence(&floor, false).ok()?;
        Some(next.with_timezone(&Utc))
    }

    /// The next `n` fires after `t`, each searched from the one before it.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut cursor = t;
        while out.len() < n {
            match self.next_after(cursor) {
                Some(next) => {
                    out.push(next);
                    cursor = next;
                }
                None => break,
            }
        }
        out
    }

    /// An error when the schedule never fires after `now`.
    pub fn check_fires(&self, now: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        self.next_after(now)
            .ok_or_else(|| ScheduleError::NeverFires(self.expr.clone()))
    }

    /// True when the instant matches every field (used by tests and `validate`).
    pub fn matches(&self, t: DateTime<Utc>) -> bool {
        match self.zone {
            Zone::Local => self.cron.is_time_matching(&t.with_timezone(&Local)),
            Zone::Named(tz) => self.cron.is_time_matching(&t.with_timezone(&tz)),
        }
        .unwrap_or(false)
    }

    /// The seconds between the 2nd and 3rd upcoming fires after `now`: the seed's measure of a
    /// job's interval, used by `analysis` to decide that a job "has not run for a long time".
    pub fn interval_secs(&self, now: DateTime<Utc>) -> Option<i64> {
        let fires = self.upcoming(now, 3);
        (fires.len() == 3).then(|| (fires[2] - fires[1]).num_seconds())
    }
}

/// Finds which field is wrong, so the error names it instead of croner's internal position.
fn explain(original: &str, normalized: &str, err: croner::errors::CronError) -> ScheduleError {
    let fields: Vec<&str> = normalized.split_whitespace().collect();
    if fields.len() == 7 {
        for (i, field) in fields.iter().enumerate() {
            let mut probe = ["0", "*", "*", "*", "*", "*", "*"];
            probe[i] = field;
            if let Err(field_err) = parser().parse(&probe.join(" ")) {
                return ScheduleError::Field {
                    expr: original.trim().to_string(),
                    field: FIELD_NAMES[i],
                    value: (*field).to_string(),
                    reason: reason(&field_err),
                };
            }
        }
    }
    ScheduleError::Invalid {
        expr: original.trim().to_string(),
        reason: reason(&err),
    }
}

fn reason(err: &croner::errors::CronError) -> String {
    use croner::errors::CronError as E;
    match err {
        E::ComponentError(msg) | E::InvalidPattern(msg) | E::IllegalCharacters(msg) => {
            msg.trim_end_matches('.').to_string()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization() {
        assert_eq!(normalize("* * * * *").unwrap(), "0 * * * * * *");
        assert_eq!(normalize("*/5 * * * * *").unwrap(), "0 */5 * * * * *");
        assert_eq!(normalize(" */10 * * * * * * ").unwrap(), "*/10 * * * * * *");
        assert_eq!(normalize("@DAILY").unwrap(), "0 0 0 * * * *");
        assert_eq!(normalize("* * * *"), Err(ScheduleError::FieldCount(4)));
        assert_eq!(
            normalize("* * * * * * * *"),
            Err(ScheduleError::FieldCount(8))
        );
        assert!(matches!(
            normalize("@reboot"),
            Err(ScheduleError::UnknownAlias(_))
        ));
    }

    #[test]
    fn field_errors_name_the_field() {
        let e = Schedule::parse("61 * * * * * *", Zone::Named(Tz::UTC)).unwrap_err();
        match e {
            ScheduleError::Field { field, value, .. } => {
                assert_eq!(field, "second");
                assert_eq!(value, "61");
            }
            other => panic!("{other:?}"),
        }
        let e = Schedule::parse("0 0 25 * * * *", Zone::Named(Tz::UTC)).unwrap_err();
        assert!(e.to_string().contains("hour field \"25\""), "{e}");
    }
}
