//! Properties of the schedule and host selection, over generated inputs.

use chrono::{DateTime, TimeZone, Utc};
use op_proto::{HostIdentity, HostPattern, Schedule, Zone};
use proptest::prelude::*;

fn field(lo: u32, hi: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        (lo..=hi).prop_map(|v| v.to_string()),
        (lo..=hi, 1u32..10).prop_map(|(a, s)| format!("{a}/{s}")),
        (1u32..10).prop_map(|s| format!("*/{s}")),
        (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("{a},{b}")),
    ]
}

fn expr() -> impl Strategy<Value = String> {
    (
        field(0, 59),
        field(0, 59),
        field(0, 23),
        prop_oneof![field(1, 28), Just("L".to_string()), Just("15W".to_string())],
        field(1, 12),
        prop_oneof![
            field(0, 7),
            Just("MON-FRI".to_string()),
            Just("5#2".to_string())
        ],
    )
        .prop_map(|(s, m, h, dom, mon, dow)| format!("{s} {m} {h} {dom} {mon} {dow} *"))
}

fn zone() -> impl Strategy<Value = Zone> {
    prop_oneof![
        Just(Zone::Named(chrono_tz::UTC)),
        Just(Zone::Named(chrono_tz::Europe::Berlin)),
        Just(Zone::Named(chrono_tz::America::New_York)),
        Just(Zone::Named(chrono_tz::Australia::Lord_Howe)),
    ]
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 2024-01-01 .. 2030-01-01, with milliseconds.
    (1_704_067_200_000i64..1_893_456_000_000).prop_map(|ms| Utc.timestamp_millis_opt(ms).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn next_after_is_strictly_increasing_and_matches(e in expr(), z in zone(), t in instant()) {
        let s = Schedule::parse(&e, z).unwrap();
        let mut prev = t;
        for next in s.upcoming(t, 5) {
            prop_assert!(next > prev, "{} not after {} for {}", next, prev, e);
            let gap = match z {
                Zone::Named(tz) => crate::cron::after_gap(tz, next),
                Zone::Local => false,
            };
            prop_assert!(s.matches(next) || gap, "{} does not match {}", next, e);
            prev = next;
        }
    }

    #[test]
    fn ip_entries_match_only_equal_ips(a in any::<u32>(), b in any::<u32>()) {
        let ip_a = std::net::Ipv4Addr::from(a);
        let ip_b = std::net::Ipv4Addr::from(b);
        let p = HostPattern::parse(&ip_a.to_string()).unwrap();
        let host = HostIdentity { hostname: "h".into(), ips: vec![ip_b.into()], labels: Default::default(), facts: None };
        prop_assert_eq!(p.matches(&host), a == b);
    }

    #[test]
    fn task_file_parser_never_panics(s in "\\PC{0,200}") {
        let _ = op_proto::JobSpec::from_task_json(&s);
    }
}
