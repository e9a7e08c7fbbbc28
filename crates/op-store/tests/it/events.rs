//! Events derived in apply (issue 19): run results, node changes and the leader's `CloseFires` /
//! `FlushEvents` go through the replicated incident state, and the events land in the store in
//! the same transaction, with the same ids whatever batch boundaries the log was applied with.

use op_proto::events::EventKind;
use op_proto::incidents::FireKey;
use op_proto::package::{InstalledPackage, PackageState};
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

fn beat(n: u8, secs: i64, packages: Vec<InstalledPackage>) -> Command {
    Command::Heartbeats {
        beats: vec![op_store::NodeBeat {
            node_id: node_id(n),
            seen_at: at(secs),
            agent_version: "0.1.0".into(),
            load: None,
            running: vec![],
            packages,
            stats: Default::default(),
            degraded: None,
            clock_skew_ms: None,
        }],
    }
}

fn report(
    state: PackageState,
    version: u64,
    target: Option<u64>,
    error: Option<&str>,
) -> InstalledPackage {
    InstalledPackage {
        name: "tool.tar.gz".into(),
        version,
        sha256: String::new(),
        state,
        target_version: target,
        error: error.map(str::to_string),
        fetched: None,
    }
}

/// Hosts reporting in their heartbeats that a version failed to deploy give one
/// `package.failed` per version and reason at the flush; steady reports feed nothing more, and a
/// host that fails the same way later joins silently.
#[test]
fn package_failures_from_heartbeats_are_grouped_by_version_and_reason() {
    let mut s = TestStore::new();
    given(&mut s, &[2, 3, 4, 5], &[]);
    let bad = Some("archive refused: absolute path \"/x\"");
    for n in [2, 3] {
        s.apply(beat(
            n,
            100,
            vec![report(PackageState::Failed, 1, Some(7), bad)],
        ));
    }
    s.apply(beat(
        4,
        100,
        vec![report(PackageState::Failed, 1, Some(7), Some("disk full"))],
    ));
    // Another host installed it: no event.
    s.apply(beat(
        5,
        100,
        vec![report(PackageState::Installed, 7, None, None)],
    ));
    // The same reports again (steady heartbeats) change nothing.
    s.apply(beat(
        2,
        103,
        vec![report(PackageState::Failed, 1, Some(7), bad)],
    ));
    let state = s.store.incident_state().unwrap();
    assert!(state.flush_due(at(110), chrono::Duration::seconds(10)));
    s.apply(Command::FlushEvents { at: at(110) });
    let events = s.store.events_after(0, 100).unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    for e in &events {
        assert_eq!(e.kind, EventKind::PackageFailed);
        assert_eq!(e.package.as_deref(), Some("tool.tar.gz@7"));
        assert_eq!(e.url, "/ui/packages/tool.tar.gz");
    }
    let refused = events
        .iter()
        .find(|e| e.signature.as_deref() == bad)
        .expect("the archive group");
    assert_eq!(refused.hosts, ["node-2", "node-3"]);
    assert!(
        refused.summary.contains("failed to deploy on 2 hosts"),
        "{}",
        refused.summary
    );
    let disk = events
        .iter()
        .find(|e| e.signature.as_deref() == Some("disk full"))
        .expect("the disk group");
    assert_eq!(disk.hosts, ["node-4"]);

    // A retry keeping the error (downloading) is the same failure; a later host failing the
    // same way joins the notified group silently; an install removes the host from its group.
    s.apply(beat(
        2,
        120,
        vec![report(PackageState::Downloading, 1, Some(7), bad)],
    ));
    s.apply(beat(
        5,
        120,
        vec![report(PackageState::Failed, 7, Some(8), Some("disk full"))],
    ));
    s.apply(beat(
        3,
        121,
        vec![report(PackageState::Installed, 7, None, None)],
    ));
    s.apply(Command::FlushEvents { at: at(130) });
    let more = s.store.events_after(events[1].id, 100).unwrap();
    assert_eq!(more.len(), 1, "only version 8's failure is new: {more:?}");
    assert_eq!(more[0].package.as_deref(), Some("tool.tar.gz@8"));
    assert_eq!(more[0].hosts, ["node-5"]);
}

/// A node announced NotReady and then forgotten is dropped from the incident state: it is not
/// announced again, and coming back as a new registration is not a `node.ready` for the old
/// announcement. A node forgotten within the batch that saw it go down is never announced.
#[test]
fn a_forgotten_node_leaves_the_node_incidents() {
    let mut s = TestStore::new();
    given(&mut s, &[2, 3, 4], &[]);
    let down = |nodes: &[u8], secs: i64| Command::SetNodeStatus {
        at: at(secs),
        changes: nodes
            .iter()
            .map(|&n| StatusChange {
                node_id: node_id(n),
                status: NodeStatus::NotReady,
                unless_seen_after: at(50),
            })
            .collect(),
    };
    let forget = |n: u8, secs: i64| Command::ForgetNode {
        node_id: node_id(n),
        at: at(secs),
        actor: "ops".into(),
    };
    s.apply(down(&[2, 3], 100));
    s.apply(Command::FlushEvents { at: at(110) });
    let first = s.store.events_after(0, 100).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].hosts, ["node-2", "node-3"]);

    s.apply(forget(2, 120));
    // node-4 goes down and is forgotten before the flush: never announced.
    s.apply(down(&[4], 121));
    s.apply(forget(4, 122));
    assert!(
        s.store
            .incident_state()
            .unwrap()
            .flush_due(at(140), chrono::Duration::seconds(10)),
        "the forget is a change the leader flushes"
    );
    s.apply(Command::FlushEvents { at: at(140) });
    assert!(
        s.store.events_after(first[0].id, 100).unwrap().is_empty(),
        "forgetting announces nothing"
    );
    // Nor is the forgotten node kept among those announced down (an incident open forever).
    let state = serde_json::to_value(s.store.incident_state().unwrap()).unwrap();
    let down: Vec<&String> = state["down"].as_object().unwrap().keys().collect();
    assert_eq!(down, ["node-3"]);
    // node-3 comes back: its recovery answers the announcement; node-2 is no longer in it.
    s.apply(register(3, 150));
    s.apply(Command::FlushEvents { at: at(160) });
    let back = s.store.events_after(first[0].id, 100).unwrap();
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0].kind, EventKind::NodeReady);
    assert_eq!(back[0].hosts, ["node-3"]);
    // node-2 registering again later is a new node, not the end of the old announcement.
    s.apply(register(2, 170));
    s.apply(Command::FlushEvents { at: at(180) });
    assert!(s.store.events_after(back[0].id, 100).unwrap().is_empty());
}

/// The console's newest-first read filters by kind and job.
#[test]
fn newest_events_filter_by_kind_and_job() {
    let mut s = TestStore::new();
    given(&mut s, &[2, 3], &["a", "b"]);
    s.apply(ingest(2, vec![failing(2, "a", 100, "boom\n")], 101));
    s.apply(ingest(3, vec![failing(3, "b", 100, "bang\n")], 101));
    s.apply(close("a", 100, &[2, 3]));
    s.apply(close("b", 100, &[2, 3]));
    s.apply(Command::SetNodeStatus {
        at: at(120),
        changes: vec![StatusChange {
            node_id: node_id(2),
            status: NodeStatus::NotReady,
            unless_seen_after: at(115),
        }],
    });
    s.apply(Command::FlushEvents { at: at(130) });
    let all = s.store.events_newest(&[], None, None, 100).unwrap();
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let b = s.store.events_newest(&[], Some("b"), None, 100).unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].job.as_deref(), Some("b"));
    let nodes = s
        .store
        .events_newest(&["node.not_ready".into()], None, None, 100)
        .unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].kind, EventKind::NodeNotReady);
    let failed = s
        .store
        .events_newest(&["run.failed".into(), "node.ready".into()], None, None, 100)
        .unwrap();
    assert_eq!(failed.len(), 2);
    let older = s
        .store
        .events_newest(&[], None, Some(all[0].id), 1)
        .unwrap();
    assert_eq!(older, [all[1].clone()]);
}

/// A forgotten host no longer holds a job's incident open: when the other host of an
/// invocation-only job (no fire of the job's own deselects anyone) succeeds, the incident closes.
#[test]
fn a_forgotten_host_does_not_hold_a_run_incident_open() {
    let mut s = TestStore::new();
    given(&mut s, &[2, 3], &[]);
    let invocation = |inv: u128, n: u8, status: RunStatus, stderr: &str| {
        let mut r = run(n, "adhoc-job", 0, 100 + inv as i64, status);
        r.run_id = uuid::Uuid::from_u128(
            0x0195_0000_0000_7000_8000_0000_0000_0000 + inv * 256 + u128::from(n),
        );
        r.invocation_id = Some(uuid::Uuid::from_u128(inv));
        r.trigger = op_proto::Trigger::Adhoc;
        r.exit_code = Some(if status == RunStatus::Ok { 0 } else { 1 });
        r.stderr_tail = stderr.into();
        ingest(n, vec![r], 100 + inv as i64)
    };
    let close_invocation = |inv: u128, secs: i64| Command::CloseFires {
        at: at(secs),
        fires: vec![FireToClose {
            fire: FireKey::Invocation {
                job: "adhoc-job".into(),
                invocation_id: uuid::Uuid::from_u128(inv),
            },
            selected: vec![],
        }],
    };
    for n in [2, 3] {
        s.apply(invocation(1, n, RunStatus::Failed, "boom\n"));
    }
    s.apply(close_invocation(1, 110));
    let opened = s.store.events_after(0, 100).unwrap();
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0].hosts, ["node-2", "node-3"]);

    s.apply(Command::ForgetNode {
        node_id: node_id(2),
        at: at(120),
        actor: "ops".into(),
    });
    s.apply(invocation(2, 3, RunStatus::Ok, ""));
    s.apply(close_invocation(2, 130));
    let closed = s.store.events_after(opened[0].id, 100).unwrap();
    let recovered: Vec<_> = closed
        .iter()
        .filter(|e| e.kind == EventKind::RunRecovered)
        .collect();
    assert_eq!(recovered.len(), 1, "{closed:?}");
    assert_eq!(recovered[0].incident, Some(opened[0].id));
    assert_eq!(recovered[0].hosts, ["node-3"]);
    assert_eq!(s.store.incident_state().unwrap().open_incidents(), 0);
}

fn webhook_rule(name: &str) -> op_proto::events::NotifyRule {
    op_proto::events::NotifyRule {
        name: name.into(),
        filter: Default::default(),
        channel: op_proto::events::Channel::Webhook {
            url: "http://127.0.0.1:9/hook".into(),
            template: None,
            secret_file: None,
        },
    }
}

#[test]
fn a_rule_starts_at_the_newest_event_and_its_position_only_moves_forward() {
    let mut s = TestStore::new();
    given(&mut s, &[2, 3], &["backup"]);
    for n in [2, 3] {
        s.apply(ingest(
            n,
            vec![failing(n, "backup", 100, "disk full\n")],
            102,
        ));
    }
    s.apply(close("backup", 100, &[2, 3]));
    let newest = s.store.events_after(0, 100).unwrap().last().unwrap().id;
    s.apply(Command::PutNotifyRule {
        rule: Box::new(webhook_rule("ops")),
        at: at(300),
        actor: "admin".into(),
    });
    let info = s.store.notify_rule("ops").unwrap().unwrap();
    assert_eq!(info.delivery.acknowledged, newest, "no history is replayed");
    assert_eq!(info.delivery.last_success, None);

    // A failure is recorded; a success clears it and moves the position.
    s.apply(Command::NotifyFailed {
        rule: "ops".into(),
        event_id: newest + 1,
        failures: 2,
        error: "webhook http://127.0.0.1:9: connection refused".into(),
        at: at(310),
    });
    let d = s.store.notify_rule("ops").unwrap().unwrap().delivery;
    assert_eq!(d.consecutive_failures, 2);
    assert_eq!(d.last_failure, Some(at(310)));
    assert!(d.last_error.unwrap().contains("connection refused"));
    s.apply(Command::NotifyDelivered {
        rule: "ops".into(),
        event_id: newest + 5,
        at: at(320),
    });
    // Never backwards; a late failure of an acknowledged event changes nothing.
    s.apply(Command::NotifyDelivered {
        rule: "ops".into(),
        event_id: newest + 2,
        at: at(321),
    });
    s.apply(Command::NotifyFailed {
        rule: "ops".into(),
        event_id: newest + 3,
        failures: 1,
        error: "late".into(),
        at: at(322),
    });
    let d = s.store.notify_rule("ops").unwrap().unwrap().delivery;
    assert_eq!(d.acknowledged, newest + 5);
    assert_eq!(d.consecutive_failures, 0);
    assert_eq!(d.last_success, Some(at(321)));

    // Replacing the rule keeps its position; removing it drops it, and a late ack is ignored.
    s.apply(Command::PutNotifyRule {
        rule: Box::new(webhook_rule("ops")),
        at: at(330),
        actor: "admin".into(),
    });
    assert_eq!(
        s.store
            .notify_rule("ops")
            .unwrap()
            .unwrap()
            .delivery
            .acknowledged,
        newest + 5
    );
    s.apply(Command::RemoveNotifyRule {
        name: "ops".into(),
        at: at(340),
        actor: "admin".into(),
    });
    s.apply(Command::NotifyDelivered {
        rule: "ops".into(),
        event_id: newest + 9,
        at: at(341),
    });
    assert!(s.store.notify_rules().unwrap().is_empty());
    // Saved again, it starts over at the newest event.
    s.apply(Command::PutNotifyRule {
        rule: Box::new(webhook_rule("ops")),
        at: at(350),
        actor: "admin".into(),
    });
    assert_eq!(
        s.store
            .notify_rule("ops")
            .unwrap()
            .unwrap()
            .delivery
            .acknowledged,
        newest
    );
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

/// The open fires are rows (issue 25): a store opened again on the same file, and one that
/// installed a snapshot of it, hold the same open fires and derive the same events as the store
/// that never stopped.
#[test]
fn open_fires_survive_a_restart_and_a_snapshot() {
    let mut s = TestStore::new();
    given(&mut s, &[2, 3, 4], &["a", "b"]);
    s.apply(ingest(2, vec![failing(2, "a", 100, "boom\n")], 101));
    s.apply(ingest(3, vec![failing(3, "a", 100, "bang\n")], 101));
    s.apply(ingest(3, vec![failing(3, "b", 100, "boom\n")], 101));
    // A fire that closes before the restart: its rows go with it.
    s.apply(close("b", 100, &[3]));
    let before = s.store.incident_state().unwrap();
    assert_eq!(before.open_fires().count(), 1);

    let path = s.dir.path().join("state.db");
    let mut again = TestStore {
        store: op_store::Store::open(&path).unwrap(),
        index: s.index,
        dir: tempfile::tempdir().unwrap(),
    };
    assert_eq!(again.store.incident_state().unwrap(), before);

    let snap = s.dir.path().join("snap.db");
    s.store.snapshot_to(&snap).unwrap();
    let mut other = TestStore::new();
    given(&mut other, &[5], &["c"]);
    other.apply(ingest(5, vec![failing(5, "c", 100, "other\n")], 101));
    assert!(other.store.incident_state().unwrap() != before);
    other.store.install_from(&snap).unwrap();
    other.index = s.index;
    assert_eq!(other.store.incident_state().unwrap(), before);

    // node-4 reports late, then the leader closes the fire: the same events everywhere.
    let mut derived = Vec::new();
    for store in [&mut s, &mut again, &mut other] {
        store.apply(ingest(4, vec![failing(4, "a", 100, "boom\n")], 103));
        store.apply(close("a", 100, &[2, 3, 4]));
        derived.push(store.store.events_after(0, 100).unwrap());
        assert_eq!(
            store.store.incident_state().unwrap().open_fires().count(),
            0
        );
    }
    assert_eq!(
        derived[0].len(),
        3,
        "b's, then a's two signatures: {:?}",
        derived[0]
    );
    assert_eq!(derived[0], derived[1]);
    assert_eq!(derived[0], derived[2]);
    let a_boom = derived[0]
        .iter()
        .find(|e| e.signature.as_deref() == Some("boom") && e.job.as_deref() == Some("a"));
    assert_eq!(a_boom.unwrap().hosts, ["node-2", "node-4"]);

    // Nothing of a closed fire is left behind in the database.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let rows: i64 = conn
        .query_row(
            "SELECT (SELECT count(*) FROM incident_fires) + (SELECT count(*) FROM incident_fire_results)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 0);
}

/// A database written before the fires were rows keeps its open fires: the migration moves the
/// `fires` list out of the stored state into rows.
#[test]
fn open_fires_kept_inside_the_state_move_into_rows() {
    let mut s = TestStore::new();
    given(&mut s, &[2, 3], &["a"]);
    // Something besides fires in the state, so its other fields must survive the move.
    s.apply(ingest(2, vec![failing(2, "a", 40, "old\n")], 41));
    s.apply(close("a", 40, &[2, 3]));
    let opened = s.store.events_after(0, 100).unwrap();
    assert_eq!(opened.len(), 1);
    let path = s.dir.path().join("state.db");
    drop(s.store);

    // Rewind to schema 18 with one open fire kept the old way.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let state: String = conn
        .query_row("SELECT state FROM incidents WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    let mut state: serde_json::Value = serde_json::from_str(&state).unwrap();
    let failed = serde_json::json!([
        {"outcome": "failed", "kind": "exit", "signature": "boom", "error": "exit status 1"},
        {"role": "db"}
    ]);
    state["fires"] = serde_json::json!([{
        "key": {"type": "cron", "job": "a", "planned_at": at(100)},
        "first_result": at(101),
        "results": {"node-2": failed, "node-3": [{"outcome": "ok"}, {}]},
    }]);
    conn.execute_batch(
        "DROP TABLE incident_fires; DROP TABLE incident_fire_results;
         DROP INDEX nodes_stats;
         ALTER TABLE nodes DROP COLUMN outbox_depth; ALTER TABLE nodes DROP COLUMN dropped_runs;
         PRAGMA user_version = 18;",
    )
    .unwrap();
    conn.execute(
        "UPDATE incidents SET state = ?1 WHERE id = 1",
        [state.to_string()],
    )
    .unwrap();
    drop(conn);

    let mut s = TestStore {
        store: op_store::Store::open(&path).unwrap(),
        index: 100,
        dir: tempfile::tempdir().unwrap(),
    };
    let incidents = s.store.incident_state().unwrap();
    let open: Vec<_> = incidents
        .open_fires()
        .map(|(k, t, n)| (k.clone(), t, n))
        .collect();
    assert_eq!(
        open,
        [(
            FireKey::Cron {
                job: "a".into(),
                planned_at: at(100)
            },
            at(101),
            2
        )]
    );
    assert_eq!(
        incidents.open_incidents(),
        1,
        "the rest of the state is kept"
    );
    s.apply(close("a", 100, &[2, 3]));
    let events = s.store.events_after(opened[0].id, 100).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::RunFailed);
    assert_eq!(events[0].signature.as_deref(), Some("boom"));
    assert_eq!(events[0].hosts, ["node-2"]);
    assert_eq!(events[0].id, opened[0].id + 1, "the event counter is kept");
}
