//! Jobs that run on some hosts of their selection, not all (issue 23): the task-file fields
//! `RunOn` (`"all"`, `"one"` or a number N), `Pick` and `RetryOnAnother`, and the pure pick
//! functions the raft leader uses to choose the hosts of each fire.
//!
//! For such a job the agents do not fire on their own cron: the leader fires, each fire becoming
//! one invocation on the picked Ready hosts (op-manager's `runon.rs`). The picks here are pure
//! functions of their inputs, so every member would pick alike and tests can pin them.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Largest accepted `RunOn` number.
pub const MAX_RUN_ON: u32 = 10_000;

/// `RunOn`: on how many of the selected hosts each fire runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RunOn {
    /// Every selected host fires on its own cron (the default).
    #[default]
    All,
    /// N of the selected Ready hosts, picked by the leader per fire (`"one"` is 1).
    Hosts(u32),
}

impl RunOn {
    /// How many hosts each fire runs on; `None` = all.
    pub fn count(self) -> Option<u32> {
        match self {
            RunOn::All => None,
            RunOn::Hosts(n) => Some(n),
        }
    }

    /// True when the leader fires this job (not the agents).
    pub fn is_picked(self) -> bool {
        self != RunOn::All
    }
}

/// `Pick`: how the leader chooses the hosts of a fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Pick {
    /// The hosts with the lowest load per CPU (ties broken per fire, so equal hosts share).
    #[default]
    LeastLoaded,
    /// A stable host per job: rendezvous hashing of the job name and the node id, so a host
    /// keeps the job until it is gone or not Ready, and losing one host moves only its jobs.
    Hash,
    /// A different pseudo-random host each fire (drawn from the job name and the fire time).
    Random,
}

impl Pick {
    pub fn as_str(self) -> &'static str {
        match self {
            Pick::LeastLoaded => "least_loaded",
            Pick::Hash => "hash",
            Pick::Random => "random",
        }
    }

    pub fn parse(s: &str) -> Option<Pick> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "least_loaded" => Some(Pick::LeastLoaded),
            "hash" => Some(Pick::Hash),
            "random" => Some(Pick::Random),
            _ => None,
        }
    }
}

/// A host the leader may pick: a selected Ready node not yet tried for this fire.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub node_id: Uuid,
    /// Load per CPU (1-minute load average / CPUs); `None` when unknown (sorted last).
    pub load: Option<f64>,
}

/// The `n` hosts of `candidates` the fire of `job` at `fire` runs on, best first. Pure:
/// the same inputs give the same hosts in any order of `candidates`.
pub fn pick(
    how: Pick,
    job: &str,
    fire: DateTime<Utc>,
    candidates: &[Candidate],
    n: usize,
) -> Vec<Uuid> {
    let fire_ms = fire.timestamp_millis();
    let mut scored: Vec<(f64, u64, Uuid)> = candidates
        .iter()
        .map(|c| {
            let primary = match how {
                Pick::LeastLoaded => c.load.filter(|l| l.is_finite()).unwrap_or(f64::MAX),
                Pick::Hash | Pick::Random => 0.0,
            };
            // Hash: the job's own ranking of the nodes (rendezvous). Least-loaded and random:
            // a ranking that changes with every fire.
            let tie = match how {
                Pick::Hash => score(job, None, c.node_id),
                Pick::LeastLoaded | Pick::Random => score(job, Some(fire_ms), c.node_id),
            };
            (primary, tie, c.node_id)
        })
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    scored.dedup_by_key(|s| s.2);
    scored.into_iter().take(n).map(|s| s.2).collect()
}

/// A stable 64-bit score of (job, fire, node): FNV-1a over the bytes, then a 64-bit finalizer
/// (fixed here, so it never changes with a compiler or library version).
pub fn score(job: &str, fire_ms: Option<i64>, node: Uuid) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    eat(job.as_bytes());
    eat(&[0]);
    if let Some(ms) = fire_ms {
        eat(&ms.to_be_bytes());
    }
    eat(node.as_bytes());
    // splitmix64's finalizer
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn nodes(n: u128) -> Vec<Candidate> {
        (1..=n)
            .map(|i| Candidate {
                node_id: Uuid::from_u128(i),
                load: None,
            })
            .collect()
    }

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn parse_pick_names() {
        assert_eq!(Pick::parse("least_loaded"), Some(Pick::LeastLoaded));
        assert_eq!(Pick::parse(" Hash "), Some(Pick::Hash));
        assert_eq!(Pick::parse("RANDOM"), Some(Pick::Random));
        assert_eq!(Pick::parse("round_robin"), None);
        for p in [Pick::LeastLoaded, Pick::Hash, Pick::Random] {
            assert_eq!(Pick::parse(p.as_str()), Some(p));
        }
    }

    #[test]
    fn hash_is_stable_per_job_and_ignores_order_and_fire() {
        let mut c = nodes(10);
        let first = pick(Pick::Hash, "report", at(0), &c, 1);
        assert_eq!(first.len(), 1);
        for s in 1..20 {
            assert_eq!(pick(Pick::Hash, "report", at(s), &c, 1), first);
        }
        c.reverse();
        assert_eq!(pick(Pick::Hash, "report", at(0), &c, 1), first);
        // Different jobs spread over the nodes.
        let owners: std::collections::HashSet<Uuid> = (0..50)
            .map(|j| pick(Pick::Hash, &format!("job{j}"), at(0), &c, 1)[0])
            .collect();
        assert!(owners.len() >= 5, "50 jobs on {} of 10 nodes", owners.len());
    }

    #[test]
    fn hash_moves_only_the_lost_hosts_jobs() {
        let all = nodes(8);
        for j in 0..40 {
            let job = format!("job{j}");
            let owner = pick(Pick::Hash, &job, at(0), &all, 1)[0];
            let lost = Uuid::from_u128(3);
            let rest: Vec<Candidate> = all.iter().copied().filter(|c| c.node_id != lost).collect();
            let now = pick(Pick::Hash, &job, at(0), &rest, 1)[0];
            if owner != lost {
                assert_eq!(now, owner, "{job} moved though its host stayed");
            } else {
                assert_ne!(now, lost);
            }
        }
    }

    #[test]
    fn least_loaded_prefers_low_load_per_cpu_and_unknown_last() {
        let c = vec![
            Candidate {
                node_id: Uuid::from_u128(1),
                load: Some(0.9),
            },
            Candidate {
                node_id: Uuid::from_u128(2),
                load: None,
            },
            Candidate {
                node_id: Uuid::from_u128(3),
                load: Some(0.1),
            },
            Candidate {
                node_id: Uuid::from_u128(4),
                load: Some(0.5),
            },
        ];
        assert_eq!(
            pick(Pick::LeastLoaded, "j", at(0), &c, 3),
            vec![Uuid::from_u128(3), Uuid::from_u128(4), Uuid::from_u128(1)]
        );
        assert_eq!(pick(Pick::LeastLoaded, "j", at(0), &c, 9).len(), 4);
    }

    #[test]
    fn random_and_equal_loads_spread_over_fires_and_never_repeat_a_host() {
        let c = nodes(5);
        for how in [Pick::Random, Pick::LeastLoaded] {
            let mut seen = std::collections::HashSet::new();
            for s in 0..60 {
                let p = pick(how, "j", at(s), &c, 2);
                assert_eq!(p.len(), 2);
                assert_ne!(p[0], p[1]);
                // The same inputs give the same hosts.
                assert_eq!(pick(how, "j", at(s), &c, 2), p);
                seen.insert(p[0]);
            }
            assert_eq!(seen.len(), 5, "{how:?} used only {} of 5 hosts", seen.len());
        }
    }

    #[test]
    fn no_candidates_no_pick() {
        assert!(pick(Pick::Hash, "j", at(0), &[], 1).is_empty());
        assert!(pick(Pick::Hash, "j", at(0), &nodes(3), 0).is_empty());
    }
}
