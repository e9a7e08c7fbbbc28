//! Cron vectors checked against hand-computed times, in the seed's 7-field style and every other
//! accepted form, across month ends, leap years and both DST transitions.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use op_proto::{Schedule, Zone};

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

/// The next `want.len()` fires of `expr` in `zone` after `from`.
fn check(expr: &str, zone: Tz, from: DateTime<Utc>, want: &[DateTime<Utc>]) {
    let s = Schedule::parse(expr, Zone::Named(zone)).unwrap_or_else(|e| panic!("{expr}: {e}"));
    let got = s.upcoming(from, want.len());
    assert_eq!(got, want, "{expr} in {zone} from {from}");
    for t in got {
        assert!(
            s.matches(t) || after_gap(zone, t),
            "{expr}: {t} returned but does not match"
        );
    }
}

/// True when `t` is the first instant after a skipped stretch of local time (spring forward):
/// the one place a fire may not match its fields, because the matching time does not exist.
pub fn after_gap(zone: Tz, t: DateTime<Utc>) -> bool {
    use chrono::Offset;
    let before = (t - chrono::Duration::seconds(1))
        .with_timezone(&zone)
        .offset()
        .fix();
    let at = t.with_timezone(&zone).offset().fix();
    at.local_minus_utc() > before.local_minus_utc()
}

const UTC: Tz = Tz::UTC;

#[test]
fn seed_documented_forms() {
    let t = utc(2026, 11, 25, 8, 29, 43);
    check(
        "*/10 * * * * * *",
        UTC,
        t,
        &[
            utc(2026, 11, 25, 8, 29, 50),
            utc(2026, 11, 25, 8, 30, 0),
            utc(2026, 11, 25, 8, 30, 10),
        ],
    );
    check(
        "0 */2 * * * * *",
        UTC,
        t,
        &[
            utc(2026, 11, 25, 8, 30, 0),
            utc(2026, 11, 25, 8, 32, 0),
            utc(2026, 11, 25, 8, 34, 0),
        ],
    );
    check(
        "0 */1 * * * * *",
        UTC,
        t,
        &[utc(2026, 11, 25, 8, 30, 0), utc(2026, 11, 25, 8, 31, 0)],
    );
    check(
        "0 0 */1 * * * *",
        UTC,
        t,
        &[
            utc(2026, 11, 25, 9, 0, 0),
            utc(2026, 11, 25, 10, 0, 0),
            utc(2026, 11, 25, 11, 0, 0),
        ],
    );
    check(
        "* * * * * * *",
        UTC,
        t,
        &[utc(2026, 11, 25, 8, 29, 44), utc(2026, 11, 25, 8, 29, 45)],
    );
}

#[test]
fn weekdays_ranges_names() {
    // Friday 2026-11-27 10:00: the next weekday mornings are Mon, Tue, Wed.
    let fri = utc(2026, 11, 27, 10, 0, 0);
    check(
        "0 30 9 * * MON-FRI *",
        UTC,
        fri,
        &[
            utc(2026, 11, 30, 9, 30, 0),
            utc(2026, 12, 1, 9, 30, 0),
            utc(2026, 12, 2, 9, 30, 0),
        ],
    );
    check("0 30 9 * * 1-5 *", UTC, fri, &[utc(2026, 11, 30, 9, 30, 0)]);
    // 0 and 7 are both Sunday (2026-11-29).
    check(
        "0 0 0 * * 0 *",
        UTC,
        fri,
        &[utc(2026, 11, 29, 0, 0, 0), utc(2026, 12, 6, 0, 0, 0)],
    );
    check(
        "0 0 0 * * 7 *",
        UTC,
        fri,
        &[utc(2026, 11, 29, 0, 0, 0), utc(2026, 12, 6, 0, 0, 0)],
    );
    check("0 0 0 * * sun *", UTC, fri, &[utc(2026, 11, 29, 0, 0, 0)]);
    // Restricted day-of-month and day-of-week are OR-ed: the 1st, or any Monday.
    check(
        "0 0 0 1 * MON *",
        UTC,
        fri,
        &[
            utc(2026, 11, 30, 0, 0, 0),
            utc(2026, 12, 1, 0, 0, 0),
            utc(2026, 12, 7, 0, 0, 0),
        ],
    );
    check(
        "0 0 0 1 JAN,jul * *",
        UTC,
        fri,
        &[utc(2027, 1, 1, 0, 0, 0), utc(2027, 7, 1, 0, 0, 0)],
    );
    check(
        "0 0-30/15 8 * * * *",
        UTC,
        fri,
        &[
            utc(2026, 11, 28, 8, 0, 0),
            utc(2026, 11, 28, 8, 15, 0),
            utc(2026, 11, 28, 8, 30, 0),
            utc(2026, 11, 29, 8, 0, 0),
        ],
    );
    check(
        "0 5,10 10 * * * *",
        UTC,
        fri,
        &[
            utc(2026, 11, 27, 10, 5, 0),
            utc(2026, 11, 27, 10, 10, 0),
            utc(2026, 11, 28, 10, 5, 0),
        ],
    );
    // cronexpr's `start/step` form.
    check(
        "0/20 * * * * * *",
        UTC,
        fri,
        &[
            utc(2026, 11, 27, 10, 0, 20),
            utc(2026, 11, 27, 10, 0, 40),
            utc(2026, 11, 27, 10, 1, 0),
        ],
    );
    check("0 0 12 ? * * *", UTC, fri, &[utc(2026, 11, 27, 12, 0, 0)]);
}

#[test]
fn last_day_and_leap_years() {
    check(
        "0 0 12 L * * *",
        UTC,
        utc(2024, 1, 31, 13, 0, 0),
        &[
            utc(2024, 2, 29, 12, 0, 0),
            utc(2024, 3, 31, 12, 0, 0),
            utc(2024, 4, 30, 12, 0, 0),
        ],
    );
    check(
        "0 0 12 L * * *",
        UTC,
        utc(2025, 2, 1, 0, 0, 0),
        &[utc(2025, 2, 28, 12, 0, 0)],
    );
    check(
        "0 0 0 29 2 * *",
        UTC,
        utc(2024, 3, 1, 0, 0, 0),
        &[utc(2028, 2, 29, 0, 0, 0), utc(2032, 2, 29, 0, 0, 0)],
    );
    // Last weekday of the month.
    check(
        "0 0 12 LW * * *",
        UTC,
        utc(2026, 11, 1, 0, 0, 0),
        &[
            utc(2026, 11, 30, 12, 0, 0),
            utc(2026, 12, 31, 12, 0, 0),
            utc(2027, 1, 29, 12, 0, 0),
        ],
    );
    // Month end rolls into the next month and year.
    check(
        "0 0 0 * * * *",
        UTC,
        utc(2026, 12, 31, 23, 59, 59),
        &[utc(2027, 1, 1, 0, 0, 0)],
    );
}

#[test]
fn nearest_weekday() {
    // 15 Feb and 15 Mar 2026 are Sundays: the Monday after; 15 Apr is a Wednesday.
    check(
        "0 0 12 15W * * *",
        UTC,
        utc(2026, 2, 1, 0, 0, 0),
        &[
            utc(2026, 2, 16, 12, 0, 0),
            utc(2026, 3, 16, 12, 0, 0),
            utc(2026, 4, 15, 12, 0, 0),
        ],
    );
    // 15 May 2027 is a Saturday: the Friday before.
    check(
        "0 0 12 15W * * *",
        UTC,
        utc(2027, 5, 1, 0, 0, 0),
        &[utc(2027, 5, 14, 12, 0, 0)],
    );
}

#[test]
fn nth_and_last_weekday() {
    check(
        "0 0 12 * * 5#3 *",
        UTC,
        utc(2026, 11, 1, 0, 0, 0),
        &[
            utc(2026, 11, 20, 12, 0, 0),
            utc(2026, 12, 18, 12, 0, 0),
            utc(2027, 1, 15, 12, 0, 0),
        ],
    );
    check(
        "0 0 12 * * FRI#3 *",
        UTC,
        utc(2026, 11, 1, 0, 0, 0),
        &[utc(2026, 11, 20, 12, 0, 0)],
    );
    check(
        "0 0 12 * * 5L *",
        UTC,
        utc(2026, 11, 1, 0, 0, 0),
        &[
            utc(2026, 11, 27, 12, 0, 0),
            utc(2026, 12, 25, 12, 0, 0),
            utc(2027, 1, 29, 12, 0, 0),
        ],
    );
}

#[test]
fn aliases() {
    let t = utc(2026, 11, 25, 8, 29, 43);
    check(
        "@daily",
        UTC,
        t,
        &[utc(2026, 11, 26, 0, 0, 0), utc(2026, 11, 27, 0, 0, 0)],
    );
    check("@hourly", UTC, t, &[utc(2026, 11, 25, 9, 0, 0)]);
    check("@weekly", UTC, t, &[utc(2026, 11, 29, 0, 0, 0)]);
    check("@monthly", UTC, t, &[utc(2026, 12, 1, 0, 0, 0)]);
    check("@yearly", UTC, t, &[utc(2027, 1, 1, 0, 0, 0)]);
    check("@annually", UTC, t, &[utc(2027, 1, 1, 0, 0, 0)]);
}

#[test]
fn six_and_five_field_forms() {
    let t = utc(2026, 11, 25, 8, 29, 43);
    // 6 fields = min hour dom month dow year (not seconds-first): 09:30:00 daily.
    check(
        "30 9 * * * *",
        UTC,
        t,
        &[utc(2026, 11, 25, 9, 30, 0), utc(2026, 11, 26, 9, 30, 0)],
    );
    check(
        "*/5 * * * * 2026",
        UTC,
        t,
        &[utc(2026, 11, 25, 8, 30, 0), utc(2026, 11, 25, 8, 35, 0)],
    );
    // 5 fields = classic crontab; Monday 2026-11-30.
    check(
        "30 9 * * 1",
        UTC,
        t,
        &[utc(2026, 11, 30, 9, 30, 0), utc(2026, 12, 7, 9, 30, 0)],
    );
    check(
        "*/15 * * * *",
        UTC,
        t,
        &[utc(2026, 11, 25, 8, 30, 0), utc(2026, 11, 25, 8, 45, 0)],
    );
}

#[test]
fn years_and_never() {
    let s = Schedule::parse("0 0 0 1 1 * 2030", Zone::Named(UTC)).unwrap();
    assert_eq!(
        s.upcoming(utc(2026, 1, 1, 0, 0, 0), 3),
        vec![utc(2030, 1, 1, 0, 0, 0)]
    );
    let past = Schedule::parse("0 0 0 1 1 * 2020", Zone::Named(UTC)).unwrap();
    assert_eq!(past.next_after(utc(2026, 1, 1, 0, 0, 0)), None);
    assert!(past.check_fires(utc(2026, 1, 1, 0, 0, 0)).is_err());
    let never = Schedule::parse("0 0 0 30 2 * *", Zone::Named(UTC)).unwrap();
    assert_eq!(never.next_after(utc(2026, 1, 1, 0, 0, 0)), None);
}

#[test]
fn fractional_start_does_not_repeat_a_fire() {
    let s = Schedule::parse("* * * * * * *", Zone::Named(UTC)).unwrap();
    let t = utc(2026, 1, 1, 0, 0, 0) + chrono::Duration::milliseconds(300);
    assert_eq!(s.next_after(t), Some(utc(2026, 1, 1, 0, 0, 1)));
}

const BERLIN: Tz = chrono_tz::Europe::Berlin;
const NEW_YORK: Tz = chrono_tz::America::New_York;

#[test]
fn dst_spring_forward_fires_at_next_valid_instant() {
    // Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST. 02:30 does not exist that day.
    check(
        "0 30 2 * * * *",
        BERLIN,
        utc(2026, 3, 28, 0, 0, 0),
        &[
            utc(2026, 3, 28, 1, 30, 0), // 02:30 CET
            utc(2026, 3, 29, 1, 0, 0),  // 03:00 CEST, the next valid instant
            utc(2026, 3, 30, 0, 30, 0), // 02:30 CEST
        ],
    );
    // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT.
    check(
        "0 30 2 * * * *",
        NEW_YORK,
        utc(2026, 3, 7, 0, 0, 0),
        &[
            utc(2026, 3, 7, 7, 30, 0), // 02:30 EST
            utc(2026, 3, 8, 7, 0, 0),  // 03:00 EDT
            utc(2026, 3, 9, 6, 30, 0), // 02:30 EDT
        ],
    );
    // An interval schedule goes straight on after the gap.
    check(
        "0 */30 * * * * *",
        NEW_YORK,
        utc(2026, 3, 8, 6, 50, 0),
        &[
            utc(2026, 3, 8, 7, 0, 0), // 03:00 EDT (02:00 and 02:30 do not exist)
            utc(2026, 3, 8, 7, 30, 0),
        ],
    );
}

#[test]
fn dst_fall_back_fires_once_at_first_occurrence() {
    // Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
    check(
        "0 30 2 * * * *",
        BERLIN,
        utc(2026, 10, 24, 12, 0, 0),
        &[
            utc(2026, 10, 25, 0, 30, 0), // 02:30 CEST, the first occurrence only
            utc(2026, 10, 26, 1, 30, 0), // 02:30 CET next day
        ],
    );
    // New York, 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
    check(
        "0 30 1 * * * *",
        NEW_YORK,
        utc(2026, 10, 31, 12, 0, 0),
        &[
            utc(2026, 11, 1, 5, 30, 0), // 01:30 EDT
            utc(2026, 11, 2, 6, 30, 0), // 01:30 EST next day
        ],
    );
    // Interval schedules keep their real-time rhythm through the repeated hour.
    check(
        "0 */30 * * * * *",
        NEW_YORK,
        utc(2026, 11, 1, 4, 50, 0),
        &[
            utc(2026, 11, 1, 5, 0, 0),  // 01:00 EDT
            utc(2026, 11, 1, 5, 30, 0), // 01:30 EDT
            utc(2026, 11, 1, 6, 0, 0),  // 01:00 EST
            utc(2026, 11, 1, 6, 30, 0), // 01:30 EST
            utc(2026, 11, 1, 7, 0, 0),  // 02:00 EST
        ],
    );
}
