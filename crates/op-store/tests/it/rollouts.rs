//! Rollouts (issue 21): starting one with its upload or save, deterministic thresholds, advance,
//! halt with rollback, operator actions, and what the sync view reads.

use op_proto::rollout::{RolloutAction, RolloutRequest, RolloutState, admitted};
use op_store::{Command, CommandResult, NewRollout};
use uuid::Uuid;

use crate::common::*;

fn upload(name: &str, c: char, at_secs: i64) -> Command {
    Command::AddPackageVersion {
        name: name.into(),
        sha256: c.to_string().repeat(64),
        size: 10,
        deploy_dir: None,
        at: at(at_secs),
        actor: "ops".into(),
        target: Default::default(),
    }
}

fn staged(id: u128, stages: &str, auto_rollback: bool, change: Command) -> Command {
    Command::StartRollout {
        rollout: NewRollout {
            id: Uuid::from_u128(id),
            plan: RolloutRequest::from_flags(stages, Some("0"), None, auto_rollback)
                .plan()
                .unwrap(),
        },
        change: Box::new(change),
    }
}

fn rollout(r: CommandResult) -> op_proto::rollout::RolloutInfo {
    match r {
        CommandResult::Rollout { rollout } => *rollout,
        other => panic!("{other:?}"),
    }
}

fn admitted_count(s: &TestStore, id: u128) -> usize {
    let info = s.store.rollout(Uuid::from_u128(id)).unwrap().unwrap();
    (1..=10)
        .filter(|n| admitted(info.id, info.threshold, node_id(*n)))
        .count()
}

#[test]
fn a_package_rollout_admits_its_stages_and_keeps_the_previous_for_the_rest() {
    let mut s = TestStore::new();
    for n in 1..=10 {
        s.apply(register(n, 1));
    }
    s.apply(upload("tool.sh", 'a', 10));
    let r = s.apply(staged(7, "1,50%", false, upload("tool.sh", 'b', 20)));
    let CommandResult::Package { version } = r else {
        panic!("{r:?}")
    };
    assert_eq!(admitted_count(&s, 7), 1);
    let active = s.store.active_rollouts().unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].info.version, version.version);
    assert_eq!(
        active[0].previous_package.as_ref().unwrap().sha256,
        "a".repeat(64)
    );

    let id = Uuid::from_u128(7);
    let info = rollout(s.apply(Command::AdvanceRollout {
        id,
        from_stage: 0,
        at: at(30),
    }));
    assert_eq!(info.stage, 1);
    assert_eq!(admitted_count(&s, 7), 5);
    // A stale advance (same stage again) changes nothing.
    let again = rollout(s.apply(Command::AdvanceRollout {
        id,
        from_stage: 0,
        at: at(31),
    }));
    assert_eq!(again.stage, 1);
    s.apply(Command::AdvanceRollout {
        id,
        from_stage: 1,
        at: at(32),
    });
    assert_eq!(admitted_count(&s, 7), 10);
    let last = rollout(s.apply(Command::AdvanceRollout {
        id,
        from_stage: 2,
        at: at(33),
    }));
    assert_eq!(last.state, RolloutState::Finished);
    assert!(s.store.active_rollouts().unwrap().is_empty());
}

#[test]
fn halt_with_auto_rollback_admits_nobody_and_a_plain_upload_supersedes() {
    let mut s = TestStore::new();
    for n in 1..=10 {
        s.apply(register(n, 1));
    }
    s.apply(save(cron_job("tick"), 5));
    s.apply(staged(9, "1,100%", true, save(cron_job("tick"), 10)));
    assert_eq!(admitted_count(&s, 9), 1);
    let active = s.store.active_rollouts().unwrap();
    assert_eq!(active[0].previous_job.as_ref().unwrap().revision, 1);
    let info = rollout(s.apply(Command::HaltRollout {
        id: Uuid::from_u128(9),
        reason: "1 failed".into(),
        failed_hosts: vec!["node-1".into()],
        at: at(20),
    }));
    assert_eq!(info.state, RolloutState::RolledBack);
    assert_eq!(admitted_count(&s, 9), 0);
    // Resume of a rolled-back rollout is refused; abort too (nothing to do but it still filters).
    let r = s.apply(Command::RolloutAction {
        id: Uuid::from_u128(9),
        action: RolloutAction::Resume,
        at: at(21),
        actor: "admin".into(),
    });
    assert!(matches!(r, CommandResult::Rejected { .. }), "{r:?}");
    let r = s.apply(Command::RolloutAction {
        id: Uuid::from_u128(1234),
        action: RolloutAction::Pause,
        at: at(21),
        actor: "admin".into(),
    });
    assert!(matches!(r, CommandResult::Rejected { .. }), "{r:?}");
    // A save without a rollout: the rollout no longer decides anything.
    s.apply(save(cron_job("tick"), 30));
    assert!(s.store.active_rollouts().unwrap().is_empty());
    assert_eq!(
        s.store.rollout(Uuid::from_u128(9)).unwrap().unwrap().state,
        RolloutState::Superseded
    );
}

#[test]
fn a_new_rollout_keeps_what_was_fully_rolled_out_before() {
    let mut s = TestStore::new();
    for n in 1..=4 {
        s.apply(register(n, 1));
    }
    s.apply(upload("tool.sh", 'a', 10));
    s.apply(staged(1, "1", false, upload("tool.sh", 'b', 20)));
    s.apply(staged(2, "1", false, upload("tool.sh", 'c', 30)));
    let active = s.store.active_rollouts().unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].info.id, Uuid::from_u128(2));
    assert_eq!(
        active[0].previous_package.as_ref().unwrap().sha256,
        "a".repeat(64)
    );
    assert_eq!(
        s.store.rollout(Uuid::from_u128(1)).unwrap().unwrap().state,
        RolloutState::Superseded
    );
    // Audit and events record it.
    let r = s.apply(Command::RolloutAction {
        id: Uuid::from_u128(2),
        action: RolloutAction::Promote,
        at: at(40),
        actor: "admin".into(),
    });
    assert_eq!(rollout(r).state, RolloutState::Finished);
}

#[test]
fn a_targeted_package_rollout_counts_and_admits_only_the_hosts_its_version_targets() {
    let mut s = TestStore::new();
    for n in 1..=10 {
        s.apply(register(n, 1));
    }
    let hosts: Vec<String> = (1..=4).map(|n| format!("node-{n}")).collect();
    let target = op_proto::package::parse_target(&hosts, &[], &[]).unwrap();
    let targeted = |c: char, at_secs: i64| match upload("db.sql", c, at_secs) {
        Command::AddPackageVersion {
            name,
            sha256,
            size,
            deploy_dir,
            at,
            actor,
            ..
        } => Command::AddPackageVersion {
            name,
            sha256,
            size,
            deploy_dir,
            at,
            actor,
            target: target.clone(),
        },
        other => other,
    };
    s.apply(targeted('a', 10));
    s.apply(staged(11, "50%", false, targeted('b', 20)));
    let info = s.store.rollout(Uuid::from_u128(11)).unwrap().unwrap();
    let admitted: Vec<u8> = (1..=10)
        .filter(|n| admitted(info.id, info.threshold, node_id(*n)))
        .collect();
    // Half of the 4 targeted hosts, never one of the 6 others (which would never report the
    // version and hold the rollout forever).
    assert_eq!(admitted.len(), 2, "{admitted:?}");
    assert!(admitted.iter().all(|n| *n <= 4), "{admitted:?}");
}

/// The commands of `pruning_keeps_what_decides_and_the_newest_ended_rollouts`, for two stores.
fn pruning_history(s: &mut TestStore) {
    for n in 1..=3 {
        s.apply(register(n, 1));
    }
    s.apply(upload("tool.sh", 'a', 10));
    s.apply(upload("other.sh", 'a', 10));
    // other.sh: halted, so it still decides what its hosts get however old it is.
    s.apply(staged(9, "1", false, upload("other.sh", 'b', 100)));
    s.apply(Command::HaltRollout {
        id: Uuid::from_u128(9),
        reason: "1 failed host".into(),
        failed_hosts: vec!["node-1".into()],
        at: at(150),
    });
    // tool.sh: rollouts 1 to 3 superseded (at 300, 400, 500), 4 finished (at 503).
    for (i, c) in ['b', 'c', 'd', 'e'].into_iter().enumerate() {
        let id = i as u128 + 1;
        s.apply(staged(
            id,
            "1,50%",
            false,
            upload("tool.sh", c, 100 * (id as i64 + 1)),
        ));
    }
    for stage in 0..3 {
        s.apply(Command::AdvanceRollout {
            id: Uuid::from_u128(4),
            from_stage: stage,
            at: at(501 + stage as i64),
        });
    }
}

fn prune_rollouts(s: &mut TestStore, now_secs: i64, kept: u64, max_age_secs: u64) -> u64 {
    let limits = op_store::RetentionLimits {
        runs_per_job_node: 0,
        run_max_age_secs: 0,
        run_max_bytes: 0,
        audit_max_age_secs: 0,
        audit_max_entries: 0,
        history_max_age_secs: 0,
        rollouts_kept: kept,
        rollout_max_age_secs: max_age_secs,
    };
    match s.apply(Command::Prune {
        now: at(now_secs),
        limits,
    }) {
        CommandResult::Pruned { report } => report.rollouts,
        other => panic!("{other:?}"),
    }
}

fn ids(s: &TestStore) -> Vec<u128> {
    let mut ids: Vec<u128> = s
        .store
        .rollouts()
        .unwrap()
        .iter()
        .map(|r| r.id.as_u128())
        .collect();
    ids.sort_unstable();
    ids
}

/// Retention of rollouts: only finished and superseded ones go (a halted one decides what its
/// hosts get and stays, however old), beyond the newest `rollouts_kept` and by age; the same
/// rows on every replica, and what each host gets is unchanged.
#[test]
fn pruning_keeps_what_decides_and_the_newest_ended_rollouts() {
    let mut a = TestStore::new();
    let mut b = TestStore::new();
    pruning_history(&mut a);
    pruning_history(&mut b);
    assert_eq!(ids(&a), vec![1, 2, 3, 4, 9]);
    let states: Vec<RolloutState> = a
        .store
        .rollouts()
        .unwrap()
        .iter()
        .map(|r| r.state)
        .collect();
    assert_eq!(
        states
            .iter()
            .filter(|s| **s == RolloutState::Superseded)
            .count(),
        3,
        "{states:?}"
    );
    let active = a.store.active_rollouts().unwrap();
    assert_eq!(active.len(), 1);

    // Limits of 0: nothing goes.
    assert_eq!(prune_rollouts(&mut a, 10_000, 0, 0), 0);
    assert_eq!(ids(&a), vec![1, 2, 3, 4, 9]);

    // The newest 2 ended (4, finished at 503; 3, superseded at 500) stay.
    assert_eq!(prune_rollouts(&mut a, 1000, 2, 0), 2);
    assert_eq!(prune_rollouts(&mut b, 1000, 2, 0), 2);
    assert_eq!(ids(&a), vec![3, 4, 9]);
    assert_eq!(a.store.rollouts().unwrap(), b.store.rollouts().unwrap());
    assert_eq!(a.store.active_rollouts().unwrap(), active);

    // By age: older than 498 s at 1000 (before 502) goes; the halted one (150) stays.
    assert_eq!(prune_rollouts(&mut a, 1000, 0, 498), 1);
    assert_eq!(prune_rollouts(&mut b, 1000, 0, 498), 1);
    assert_eq!(ids(&a), vec![4, 9]);
    assert_eq!(a.store.rollouts().unwrap(), b.store.rollouts().unwrap());
    assert_eq!(a.store.active_rollouts().unwrap(), active);

    // A Prune entry written before the rollout limits existed replays without touching them.
    let old = serde_json::json!({
        "type": "prune", "now": at(10_000), "limits": {
            "runs_per_job_node": 0, "run_max_age_secs": 0, "run_max_bytes": 0,
            "audit_max_age_secs": 0, "audit_max_entries": 0, "history_max_age_secs": 0}
    });
    let command: Command = serde_json::from_value(old).unwrap();
    match a.apply(command) {
        CommandResult::Pruned { report } => assert_eq!(report.rollouts, 0),
        other => panic!("{other:?}"),
    }
    assert_eq!(ids(&a), vec![4, 9]);
}
