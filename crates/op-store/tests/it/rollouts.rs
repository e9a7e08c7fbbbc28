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
