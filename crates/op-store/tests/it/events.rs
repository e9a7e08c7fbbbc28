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
