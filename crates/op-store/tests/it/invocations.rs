//! Invocations: targets become directives when released, runs settle them, the leader's advance
//! (release, expire, stop, finish) and an operator's cancel hold only where the state allows,
//! and retention drops finished ones.

use op_proto::agent::Directive;
use op_proto::invoke::{HostStatus, InvocationKind, InvocationOptions, InvocationState};
use op_proto::{JobSpec, RunStatus, Trigger};
use op_store::{Command, CommandResult, MissingHost, NewInvocation, NewTarget, RetentionLimits};
use uuid::Uuid;

use crate::common::*;

fn inv_id(n: u128) -> Uuid {
    Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0000 + n)
}

fn run_id(inv: u128, node: u8) -> Uuid {
    Uuid::from_u128(0x0194_0000_0000_7000_8000_0000_0000_0000 + inv * 256 + u128::from(node))
}

/// An exec of `true` on `nodes`, batches of `batch` (all in batch 0 when None), releasing
/// `release` of them at once.
fn exec(inv: u128, nodes: &[u8], batch: Option<u32>, release: &[u8], at_secs: i64) -> Command {
    let targets = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| NewTarget {
            node_id: node_id(*n),
            hostname: format!("node-{n}"),
            ips: vec![format!("127.0.0.{n}").parse().unwrap()],
            run_id: run_id(inv, *n),
            batch: batch.map_or(0, |b| i as u32 / b),
        })
        .collect();
    Command::CreateInvocation {
        invocation: Box::new(NewInvocation {
            id: inv_id(inv),
            kind: InvocationKind::Exec,
            spec: JobSpec::new(op_proto::invoke::ADHOC_JOB, "true"),
            revision: 0,
            params: Default::default(),
            options: InvocationOptions {
                batch_hosts: batch,
                deadline_secs: 60,
                ..InvocationOptions::default()
            },
            targets,
            unreachable: vec![MissingHost {
                host: "10.9.9.9".into(),
                reason: "no such host".into(),
            }],
            release: release.iter().map(|n| run_id(inv, *n)).collect(),
            retry_of: None,
            fire: None,
        }),
        at: at(at_secs),
        actor: "ops".into(),
    }
}

fn result(inv: u128, node: u8, status: RunStatus, at_secs: i64) -> Command {
    let mut r = run(node, op_proto::invoke::ADHOC_JOB, 0, at_secs, status);
    r.run_id = run_id(inv, node);
    r.invocation_id = Some(inv_id(inv));
    r.trigger = Trigger::Adhoc;
    ingest(node, vec![r], at_secs)
}

fn directives(s: &TestStore) -> Vec<(Uuid, Directive)> {
    s.store.desired_view().unwrap().directives
}

fn statuses(s: &TestStore, inv: u128) -> Vec<HostStatus> {
    let (_, targets) = s.store.invocation(inv_id(inv), false).unwrap().unwrap();
    targets.iter().map(|t| t.status).collect()
}

fn advance(
    inv: u128,
    at_secs: i64,
    release: &[u8],
    expire: &[u8],
    stop: Option<&str>,
    finish: bool,
) -> Command {
    Command::AdvanceInvocation {
        id: inv_id(inv),
        at: at(at_secs),
        release: release.iter().map(|n| run_id(inv, *n)).collect(),
        expire: expire.iter().map(|n| run_id(inv, *n)).collect(),
        stop: stop.map(str::to_string),
        finish,
    }
}

#[test]
fn released_targets_are_directives_until_their_run_arrives() {
    let mut s = TestStore::new();
    for n in [2, 3, 4] {
        s.apply(register(n, 0));
    }
    let before = s
        .store
        .desired_nodes(&[node_id(2), node_id(4)])
        .unwrap()
        .nodes;
    let r = s.apply(exec(1, &[2, 3, 4], None, &[2, 3], 1));
    assert_eq!(r, CommandResult::InvocationCreated { id: inv_id(1) });
    let d = directives(&s);
    assert_eq!(d.len(), 2);
    let Directive::Run(first) = &d[0].1 else {
        panic!("{d:?}")
    };
    assert_eq!(
        (first.run_id, first.trigger),
        (run_id(1, 2), Trigger::Adhoc)
    );
    assert_eq!(first.not_after, at(61));
    // Released nodes' own index moved (their syncs wake); node-4's did not.
    let part = s.store.desired_nodes(&[node_id(2), node_id(4)]).unwrap();
    assert!(part.nodes[0].1 > before[0].1);
    assert_eq!(part.nodes[1].1, before[1].1);
    assert_eq!(part.directives.len(), 1);
    assert_eq!(
        statuses(&s, 1),
        [
            HostStatus::Running,
            HostStatus::Running,
            HostStatus::Pending
        ]
    );

    s.apply(result(1, 2, RunStatus::Ok, 2));
    // A redelivery changes nothing; a result from another node settles nothing.
    s.apply(result(1, 2, RunStatus::Failed, 3));
    let mut forged = run(4, op_proto::invoke::ADHOC_JOB, 0, 3, RunStatus::Failed);
    forged.run_id = run_id(1, 3);
    forged.invocation_id = Some(inv_id(1));
    s.apply(ingest(4, vec![forged], 3));
    assert_eq!(
        statuses(&s, 1),
        [HostStatus::Ok, HostStatus::Running, HostStatus::Pending]
    );
    assert_eq!(directives(&s).len(), 1);
    let (row, targets) = s.store.invocation(inv_id(1), true).unwrap().unwrap();
    assert_eq!(row.detail.unreachable.len(), 1);
    assert_eq!(targets[0].run.as_ref().unwrap().status, RunStatus::Ok);
    assert!(targets[1].run.is_none());
    // The audit log names the command.
    let audit = s.store.audit(None, 100).unwrap();
    let entry = audit.iter().find(|e| e.action == "exec").unwrap();
    assert!(entry.detail.ends_with("on 3 host(s): true"), "{entry:?}");
}

#[test]
fn advance_releases_expires_stops_and_finishes_only_where_allowed() {
    let mut s = TestStore::new();
    for n in [2, 3, 4, 5] {
        s.apply(register(n, 0));
    }
    s.apply(exec(1, &[2, 3, 4, 5], Some(2), &[2, 3], 0));
    // Too early to expire node-3 (not_after is at 60 s); node-2 finished.
    s.apply(result(1, 2, RunStatus::Ok, 5));
    let r = s.apply(advance(1, 30, &[], &[2, 3], None, true));
    assert_eq!(
        r,
        CommandResult::InvocationAdvanced {
            released: 0,
            expired: 0,
            cancelled: 0,
            finished: false
        }
    );
    let r = s.apply(advance(1, 60, &[4, 2], &[3], None, false));
    assert_eq!(
        r,
        CommandResult::InvocationAdvanced {
            released: 1,
            expired: 1,
            cancelled: 0,
            finished: false
        }
    );
    assert_eq!(
        statuses(&s, 1),
        [
            HostStatus::Ok,
            HostStatus::Unreachable,
            HostStatus::Running,
            HostStatus::Pending
        ]
    );
    // A late result of the unreachable host is kept with it, but does not change its status.
    s.apply(result(1, 3, RunStatus::Ok, 61));
    let (_, targets) = s.store.invocation(inv_id(1), true).unwrap().unwrap();
    assert_eq!(targets[1].status, HostStatus::Unreachable);
    assert!(targets[1].detail.as_deref().unwrap().contains("deadline"));
    assert!(targets[1].run.is_some());

    s.apply(result(1, 4, RunStatus::Failed, 62));
    let r = s.apply(advance(
        1,
        63,
        &[],
        &[],
        Some("stopped: 2 hosts failed (max_failures 2)"),
        true,
    ));
    assert_eq!(
        r,
        CommandResult::InvocationAdvanced {
            released: 0,
            expired: 0,
            cancelled: 1,
            finished: true
        }
    );
    let (row, targets) = s.store.invocation(inv_id(1), false).unwrap().unwrap();
    assert_eq!(row.state, InvocationState::Finished);
    assert_eq!(row.finished_at, Some(at(63)));
    assert!(row.stopped.as_deref().unwrap().starts_with("stopped"));
    assert_eq!(targets[3].status, HostStatus::Cancelled);
    assert!(s.store.live_invocations().unwrap().is_empty());
    assert!(directives(&s).is_empty());
}

#[test]
fn cancel_kills_running_hosts_and_cancels_pending_ones() {
    let mut s = TestStore::new();
    for n in [2, 3] {
        s.apply(register(n, 0));
    }
    s.apply(exec(1, &[2, 3], Some(1), &[2], 0));
    let r = s.apply(Command::CancelInvocation {
        id: inv_id(1),
        at: at(1),
        actor: "ops".into(),
    });
    assert!(matches!(
        r,
        CommandResult::InvocationAdvanced { cancelled: 2, .. }
    ));
    assert_eq!(
        directives(&s),
        vec![(
            node_id(2),
            Directive::Kill {
                run_id: run_id(1, 2)
            }
        )]
    );
    // The killed run reports back: the host ends `killed`, and the invocation can finish.
    s.apply(result(1, 2, RunStatus::Killed, 2));
    assert_eq!(statuses(&s, 1), [HostStatus::Killed, HostStatus::Cancelled]);
    let r = s.apply(advance(1, 3, &[], &[], None, true));
    assert!(matches!(
        r,
        CommandResult::InvocationAdvanced { finished: true, .. }
    ));
    let again = s.apply(Command::CancelInvocation {
        id: inv_id(1),
        at: at(4),
        actor: "ops".into(),
    });
    assert!(matches!(again, CommandResult::Rejected { .. }), "{again:?}");
}

#[test]
fn a_job_invocation_is_refused_when_the_job_changed() {
    let mut s = TestStore::new();
    s.apply(register(2, 0));
    s.apply(save(JobSpec::new("j", "echo {x}"), 0));
    let create = |revision: u64| {
        let Command::CreateInvocation {
            mut invocation,
            at,
            actor,
        } = exec(1, &[2], None, &[2], 1)
        else {
            unreachable!()
        };
        invocation.kind = InvocationKind::Job;
        invocation.spec = JobSpec::new("j", "echo {x}");
        invocation.revision = revision;
        Command::CreateInvocation {
            invocation,
            at,
            actor,
        }
    };
    let r = s.apply(create(2));
    let CommandResult::Rejected { rejection } = r else {
        panic!("{r:?}")
    };
    assert_eq!(rejection.code, "conflict");
    assert!(s.store.invocation(inv_id(1), false).unwrap().is_none());
    assert_eq!(
        s.apply(create(1)),
        CommandResult::InvocationCreated { id: inv_id(1) }
    );
    // The same id twice is refused.
    assert!(matches!(s.apply(create(1)), CommandResult::Rejected { .. }));
}

#[test]
fn no_targets_is_finished_at_once_and_prune_drops_old_finished_ones() {
    let mut s = TestStore::new();
    s.apply(register(2, 0));
    s.apply(exec(1, &[], None, &[], 0));
    s.apply(exec(2, &[2], None, &[2], 0));
    let (row, _) = s.store.invocation(inv_id(1), false).unwrap().unwrap();
    assert_eq!(row.state, InvocationState::Finished);
    let r = s.apply(Command::Prune {
        now: at(8 * 86_400),
        limits: RetentionLimits::default(),
    });
    let CommandResult::Pruned { report } = r else {
        panic!("{r:?}")
    };
    assert_eq!(report.invocations, 1);
    assert!(s.store.invocation(inv_id(1), false).unwrap().is_none());
    // A running invocation stays, however old.
    assert!(s.store.invocation(inv_id(2), false).unwrap().is_some());
    let listed = s.store.invocations(&Default::default()).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].1, [HostStatus::Running]);
}

/// When the leader finishes an invocation, apply derives one `invocation.finished` event with
/// the summary the API shows (the unreachable host counted) and the hosts that did not succeed.
#[test]
fn a_finished_invocation_is_one_event_with_its_summary() {
    let mut s = TestStore::new();
    for n in [2, 3] {
        s.apply(register(n, 0));
    }
    s.apply(exec(1, &[2, 3], None, &[2, 3], 10));
    s.apply(result(1, 2, RunStatus::Ok, 11));
    // Not finished while node-3 has not answered.
    s.apply(advance(1, 12, &[], &[], None, true));
    assert!(s.store.events_after(0, 100).unwrap().is_empty());
    s.apply(result(1, 3, RunStatus::Failed, 13));
    s.apply(advance(1, 14, &[], &[], None, true));
    let events = s.store.events_after(0, 100).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.kind, op_proto::events::EventKind::InvocationFinished);
    assert_eq!(e.time, at(14));
    assert_eq!(e.hosts, ["10.9.9.9", "node-3"]);
    assert_eq!(e.selected_hosts, 3);
    assert!(
        e.summary.contains("1 ok")
            && e.summary.contains("1 failed")
            && e.summary.contains("1 unreachable"),
        "{}",
        e.summary
    );
    assert_eq!(e.url, format!("/ui/invocations/{}", inv_id(1)));
    // The summary is the one the API reads.
    let (row, targets) = s.store.invocation(inv_id(1), false).unwrap().unwrap();
    let api = row.summary(&targets);
    assert_eq!(
        (api.ok, api.failed, api.unreachable, api.total),
        (1, 1, 1, 3)
    );
    // Finishing again derives nothing more.
    s.apply(advance(1, 15, &[], &[], None, true));
    assert_eq!(s.store.events_after(0, 100).unwrap().len(), 1);
}
