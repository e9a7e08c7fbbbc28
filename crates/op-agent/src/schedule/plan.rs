//! Pure fire-time arithmetic, kept apart from the scheduler loop so it is tested without waiting.

use chrono::{DateTime, Duration, Utc};
use op_proto::Schedule;

/// Most missed fires counted one by one; beyond it the count stops growing (a schedule of one
/// fire per second missed for a day is 86,400, well inside).
const MAX_COUNTED: u64 = 1_000_000;

/// After handling the fire planned at `planned` at time `now`: the next planned fire, and how
/// many fires between the two were missed (the scheduler does not catch up on them).
pub fn advance(
    schedule: &Schedule,
    planned: DateTime<Utc>,
    now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, u64) {
    let mut lost = 0;
    let mut next = schedule.next_after(planned);
    while let Some(n) = next {
        if n > now {
            break;
        }
        lost += 1;
        if lost >= MAX_COUNTED {
            return (schedule.next_after(now), lost);
        }
        next = schedule.next_after(n);
    }
    (next, lost)
}

/// Fires in `(since, now]`: the ones missed while the agent was down.
pub fn missed_between(schedule: &Schedule, since: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let mut lost = 0;
    let mut next = schedule.next_after(since);
    while let Some(n) = next {
        if n > now || lost >= MAX_COUNTED {
            break;
        }
        lost += 1;
        next = schedule.next_after(n);
    }
    lost
}

/// A random delay in `[0, jitter_secs]`, in milliseconds.
pub fn jitter(jitter_secs: u64) -> Duration {
    if jitter_secs == 0 {
        return Duration::zero();
    }
    Duration::milliseconds(rand::random_range(0..=jitter_secs.saturating_mul(1000)) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use op_proto::Zone;

    fn every_second() -> Schedule {
        Schedule::parse("*/1 * * * * * *", Zone::parse("UTC").unwrap()).unwrap()
    }

    fn at(s: u32, ms: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, s).unwrap() + Duration::milliseconds(ms)
    }

    #[test]
    fn on_time_fire_loses_nothing() {
        let (next, lost) = advance(&every_second(), at(10, 0), at(10, 3));
        assert_eq!(next, Some(at(11, 0)));
        assert_eq!(lost, 0);
    }

    #[test]
    fn late_wakeup_counts_missed_fires() {
        let (next, lost) = advance(&every_second(), at(10, 0), at(15, 500));
        assert_eq!(next, Some(at(16, 0)));
        assert_eq!(lost, 5);
        assert_eq!(missed_between(&every_second(), at(10, 0), at(15, 500)), 5);
        assert_eq!(missed_between(&every_second(), at(10, 0), at(10, 999)), 0);
    }

    #[test]
    fn jitter_is_bounded() {
        for _ in 0..100 {
            let j = jitter(2);
            assert!(j >= Duration::zero() && j <= Duration::seconds(2));
        }
        assert_eq!(jitter(0), Duration::zero());
    }
}
