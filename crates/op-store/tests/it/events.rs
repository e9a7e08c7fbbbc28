//! Events derived in apply (issue 19): run results, node changes and the leader's `CloseFires` /
//! `FlushEvents` go through the replicated incident state, and the events land in the store in
//! the same transaction, with the same ids whatever batch boundaries the log was applied with.

use op_proto::events::EventKind;
use op_proto::incidents::FireKey;
use op_proto::{NodeStatus, RunStatus};
use op_store::{Command, Entry, FireToClose, StatusChange};

use crate::common::*;

fn failing(n: u8, job: &str, secs: i64, stderr: &str) -> op_proto::RunRecord {
    let mut r = run(n, job, 1, secs, RunStatus::Failed);
    r.exit_code = Some(1);
    r.stderr_tail = stderr.into();
    r
}

fn close(job: &str, secs: i64, hosts: &[u8]) -> Command {
    Command::CloseFires {
        at: at(secs + 10),
        fires: vec![FireToClose {
            fire: FireKey::Cron {
                job: job.into(),
                planned_at: at(secs),
            },
            selected: hosts.iter().map(|n| format!("node-{n}")).collect(),
        }],
    }
}

#[test]
fn a_fire_failing_on_three_hosts_is_one_event_and_its_fix_one_recovery() {
    let mut s = TestStore::new();
    given(&mut s, &[2, 3, 4], &["backup"]);
    for n in [2, 3, 4] {
        s.apply(ingest(
            n,
            vec![failing(n, "backup", 100, "disk full\n")],
            102,
        ));
    }
    // Nothing until the leader closes the fire.
    assert!(s.store.events_after(0, 100).unwrap().is_empty());
    let due = s
        .store
        .incident_state()
        .unwrap()
        .due_fires(at(200), chrono::Duration::seconds(10));
    assert_eq!(due.len(), 1);
    s.apply(close("backup", 100, &[2, 3, 4]));
    let events = s.store.events_after(0, 100).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::RunFailed);
    assert_eq!(events[0].hosts, ["node-2", "node-3", "node-4"]);
    assert_eq!(events[0].job.as_deref(), Some("backup"));

    for n in [2, 3, 4] {
        s.apply(ingest(
            n,
            vec![run(n, "backup", 1, 200, RunStatus::Ok)],
            202,
        ));
    }
    s.apply(close("backup", 200, &[2, 3, 4]));
    let events = s.store.events_after(events[0].id, 100).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::RunRecovered);
}

#[test]
fn nodes_going_down_together_are_one_event() {
    let mut s = TestStore::new();
    given(&mut s, &[2, 3, 4, 5], &[]);
    s.apply(Command::SetNodeStatus {
        at: at(100),
        changes: [2, 3, 4, 5]
            .iter()
            .map(|&n| StatusChange {
                node_id: node_id(n),
                status: NodeStatus::NotReady,
                unless_seen_after: at(50),
            })
            .collect(),
    });
    assert!(
        s.store
            .incident_state()
            .unwrap()
            .flush_due(at(110), chrono::Duration::seconds(10))
    );
    s.apply(Command::FlushEvents { at: at(110) });
    let events = s.store.events_after(0, 100).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::NodeNotReady);
    assert_eq!(events[0].host_count, 4);
}

/// The same log applied one entry per batch and all in one batch derives the same events.
#[test]
fn events_do_not_depend_on_batch_boundaries() {
    let mut commands = Vec::new();
    for n in [2, 3] {
        commands.push(register(n, 0));
    }
    commands.push(save(cron_job("a"), 0));
    commands.push(ingest(2, vec![failing(2, "a", 100, "boom\n")], 101));
    commands.push(ingest(3, vec![failing(3, "a", 100, "bang\n")], 101));
    commands.push(close("a", 100, &[2, 3]));

    let mut one = TestStore::new();
    for c in &commands {
        one.apply(c.clone());
    }
    let all = TestStore::new();
    let entries: Vec<_> = commands
        .iter()
        .enumerate()
        .map(|(i, c)| Entry {
            index: i as u64 + 1,
            command: Some(c),
        })
        .collect();
    let (_, changes) = all.store.apply_batch(&entries, "{}", None).unwrap();
    assert_eq!(changes.events, 2);
    let a = one.store.events_after(0, 100).unwrap();
    assert_eq!(a.len(), 2, "two signatures are two events: {a:?}");
    assert_eq!(a, all.store.events_after(0, 100).unwrap());
}

/// `JudgeFires` (issue 20): each job keeps its 5 newest judged fires, a removed job keeps none,
/// and the problems become one event per job fire and kind.
#[test]
fn judged_fires_are_kept_per_job_bounded_and_raise_schedule_events() {
    use op_proto::judged::{JudgedFire, JudgedHost};
    let mut s = TestStore::new();
    given(&mut s, &[2, 3], &["tick"]);
    let judged = |secs: i64, missed: bool| JudgedFire {
        job: "tick".into(),
        fire: at(secs),
        fire_label: "00:00".into(),
        expected: 2,
        counts: if missed {
            [("ok".to_string(), 1), ("missed".to_string(), 1)].into()
        } else {
            [("ok".to_string(), 2)].into()
        },
        missed_by_reason: if missed {
            [("no run".to_string(), 1)].into()
        } else {
            Default::default()
        },
        hosts: if missed {
            vec![JudgedHost {
                host: "node-3".into(),
                labels: Default::default(),
                outcome: "missed".into(),
                reason: "no run".into(),
            }]
        } else {
            Vec::new()
        },
        sentences: Vec::new(),
    };
    for secs in 1..=7 {
        s.apply(Command::JudgeFires {
            at: at(secs + 10),
            fires: vec![judged(secs, secs == 7)],
            overrunning: Vec::new(),
            skewed: None,
        });
    }
    let kept = s.store.judged_fires(Some("tick")).unwrap();
    let fires: Vec<_> = kept["tick"].iter().map(|f| f.fire).collect();
    assert_eq!(fires, (3..=7).rev().map(at).collect::<Vec<_>>());
    assert_eq!(s.store.judged_fires(None).unwrap().len(), 1);

    let events = s.store.events_after(0, 100).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::RunMissed);
    assert_eq!(events[0].hosts, ["node-3"]);

    s.apply(Command::DeleteJob {
        name: "tick".into(),
        at: at(100),
        actor: "admin".into(),
    });
    assert!(s.store.judged_fires(None).unwrap().is_empty());
    // A fire judged before the removal but applied after it keeps nothing.
    s.apply(Command::JudgeFires {
        at: at(101),
        fires: vec![judged(8, false)],
        overrunning: Vec::new(),
        skewed: None,
    });
    assert!(s.store.judged_fires(None).unwrap().is_empty());
}
