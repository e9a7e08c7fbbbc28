//! Any string as a cron expression: parsing and searching never panic, fires strictly increase.
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use op_proto::{Schedule, Zone};

fuzz_target!(|data: &[u8]| {
    let Ok(expr) = std::str::from_utf8(data) else {
        return;
    };
    for zone in [
        Zone::parse("UTC").unwrap(),
        Zone::parse("America/New_York").unwrap(),
    ] {
        if let Ok(s) = Schedule::parse(expr, zone) {
            let mut t = Utc.with_ymd_and_hms(2026, 3, 8, 6, 0, 0).unwrap();
            for _ in 0..3 {
                match s.next_after(t) {
                    Some(next) => {
                        assert!(next > t);
                        t = next;
                    }
                    None => break,
                }
            }
        }
    }
});
