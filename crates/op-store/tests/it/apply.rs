//! `apply`: revisions, once-job targets, idempotent ingestion, node status, tokens, determinism.

use op_proto::api::{RunQuery, Scope, TargetState};
use op_proto::{JobSpec, NodeStatus, RunStatus, Trigger};
use op_store::{Command, CommandResult, NewToken, StatusChange};
use uuid::Uuid;

use crate::common::*;

#[test]
fn save_bumps_revision_and_delete_keeps_numbering() {
    let mut s = TestStore::new();
    let CommandResult::JobSaved { response } = s.apply(save(cron_job("a"), 0)) else {
        panic!()
    };
    assert_eq!((response.revision, response.created), (1, true));
    let CommandResult::JobSaved { response } = s.apply(save(cron_job("a"), 1)) else {
        panic!()
    };
    assert_eq!((response.revision, response.created), (2, false));
    let r = s.apply(Command::SetJobEnabled {
        name: "a".into(),
        enabled: false,
        at: at(2),
        actor: "admin".into(),
    });
    let CommandResult::Job { job } = r else {
        panic!("{r:?}")
    };
    assert_eq!((job.revision, job.spec.enabled), (3, false));
    // Disabling again changes nothing.
    let CommandResult::Job { job } = s.apply(Command::SetJobEnabled {
        name: "a".into(),
        enabled: false,
        at: at(3),
        actor: "admin".into(),
    }) else {
        panic!()
    };
    assert_eq!(job.revision, 3);
    assert!(matches!(
        s.apply(Command::DeleteJob {
            name: "a".into(),
            at: at(4),
            actor: "admin".into()
        }),
        CommandResult::JobDeleted { revision: 3, .. }
    ));
    assert!(s.store.job("a").unwrap().is_none());
    let CommandResult::JobSaved { response } = s.apply(save(cron_job("a"), 5)) else {
        panic!()
    };
    assert_eq!((response.revision, response.created), (4, true));
    // A refused command leaves no trace, not even an audit entry.
    let audit_before = s.store.audit(None, 1000).unwrap().len();
    let r = s.apply(Command::DeleteJob {
        name: "nope".into(),
        at: at(6),
        actor: "admin".into(),
    });
    assert!(
        matches!(r, CommandResult::Rejected { ref rejection } if rejection.code == "not_found")
    );
    assert_eq!(s.store.audit(None, 1000).unwrap().len(), audit_before);
    let actions: Vec<_> = s
        .store
        .audit(None, 1000)
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(
        actions,
        [
            "job.save",
            "job.save",
            "job.disable",
            "job.delete",
            "job.save"
        ]
    );
}

#[test]
fn once_targets_follow_runs_and_never_go_back() {
    let mut s = TestStore::new();
    for n in [2, 3] {
        s.apply(register(n, 0));
    }
    let CommandResult::JobSaved { response } = s.apply(save(once_job("ls-l"), 1)) else {
        panic!()
    };
    let once = response.once.unwrap();
    assert_eq!(once.selected.len(), 2);
    let state = |s: &TestStore, n: u8| {
        s.store
            .once_targets("ls-l", None)
            .unwrap()
            .into_iter()
            .find(|t| t.node_id == node_id(n))
            .unwrap()
            .state
    };
    assert_eq!(state(&s, 2), TargetState::Pending);
    let mut r2 = run(2, "ls-l", 1, 10, RunStatus::Running);
    r2.trigger = Trigger::Once;
    s.apply(ingest(2, vec![r2.clone()], 10));
    assert_eq!(state(&s, 2), TargetState::Running);
    let mut done = r2.clone();
    done.status = RunStatus::Ok;
    s.apply(ingest(2, vec![done], 11));
    assert_eq!(state(&s, 2), TargetState::Done);
    // A late `running` redelivery cannot reopen it.
    let CommandResult::RunsIngested { ack } = s.apply(ingest(2, vec![r2], 12)) else {
        panic!()
    };
    assert_eq!((ack.accepted, ack.duplicates), (0, 1));
    assert_eq!(state(&s, 2), TargetState::Done);
    let mut failed = run(3, "ls-l", 1, 10, RunStatus::Timeout);
    failed.trigger = Trigger::Once;
    s.apply(ingest(3, vec![failed], 13));
    assert_eq!(state(&s, 3), TargetState::Failed);
    // Disable + enable carry the targets to the new revision with their states.
    for enabled in [false, true] {
        s.apply(Command::SetJobEnabled {
            name: "ls-l".into(),
            enabled,
            at: at(20),
            actor: "admin".into(),
        });
    }
    let targets = s.store.once_targets("ls-l", None).unwrap();
    assert_eq!(targets.len(), 2);
    assert!(targets.iter().all(|t| t.revision == 3));
    assert_eq!(state(&s, 2), TargetState::Done);
    let view = s.store.desired_view().unwrap();
    assert!(view.pending.is_empty(), "{:?}", view.pending);
}

#[test]
fn ingest_is_idempotent_and_final_replaces_running() {
    let mut s = TestStore::new();
    given(&mut s, &[2], &["a"]);
    let batch: Vec<_> = (0..5).map(|i| run(2, "a", 1, i, RunStatus::Ok)).collect();
    let CommandResult::RunsIngested { ack } = s.apply(ingest(2, batch.clone(), 10)) else {
        panic!()
    };
    assert_eq!((ack.accepted, ack.duplicates), (5, 0));
    let CommandResult::RunsIngested { ack } = s.apply(ingest(2, batch, 11)) else {
        panic!()
    };
    assert_eq!((ack.accepted, ack.duplicates), (0, 5));
    let q = RunQuery {
        job: Some("a".into()),
        ..RunQuery::default()
    };
    assert_eq!(s.store.runs(&q).unwrap().len(), 5);
    let running = run(2, "a", 1, 20, RunStatus::Running);
    s.apply(ingest(2, vec![running.clone()], 20));
    let mut fin = running.clone();
    fin.status = RunStatus::Failed;
    let CommandResult::RunsIngested { ack } = s.apply(ingest(2, vec![fin], 21)) else {
        panic!()
    };
    assert_eq!(ack.accepted, 1);
    assert_eq!(
        s.store.run(running.run_id).unwrap().unwrap().status,
        RunStatus::Failed
    );
    assert_eq!(s.store.runs(&q).unwrap().len(), 6);
}

#[test]
fn status_changes_lose_to_newer_heartbeats() {
    let mut s = TestStore::new();
    s.apply(register(2, 0));
    s.apply(Command::Heartbeats {
        beats: vec![beat(2, 50)],
    });
    // Decided on a last_seen of 0: the beat at 50 wins.
    let r = s.apply(Command::SetNodeStatus {
        at: at(60),
        changes: vec![StatusChange {
            node_id: node_id(2),
            status: NodeStatus::NotReady,
            unless_seen_after: at(0),
        }],
    });
    assert!(matches!(r, CommandResult::StatusChanged { ref changes } if changes.is_empty()));
    let r = s.apply(Command::SetNodeStatus {
        at: at(90),
        changes: vec![StatusChange {
            node_id: node_id(2),
            status: NodeStatus::NotReady,
            unless_seen_after: at(50),
        }],
    });
    assert!(matches!(r, CommandResult::StatusChanged { ref changes } if changes.len() == 1));
    assert_eq!(
        s.store.node(node_id(2)).unwrap().unwrap().status,
        NodeStatus::NotReady
    );
}

#[test]
fn a_beat_older_than_the_nodes_registration_changes_nothing() {
    let mut s = TestStore::new();
    s.apply(register(2, 0));
    let beat = |seen: i64, version: &str| Command::Heartbeats {
        beats: vec![op_store::NodeBeat {
            node_id: node_id(2),
            seen_at: at(seen),
            agent_version: version.into(),
            load: None,
            running: vec![],
            packages: vec![],
            stats: Default::default(),
            degraded: Some("stopping".into()),
            clock_skew_ms: None,
        }],
    };
    s.apply(beat(10, "0.1.0"));
    // The agent upgraded itself and registered again at 20 with its new version; the old
    // agent's last beat, taken at 15, is flushed after that.
    let mut reg = register(2, 20);
    if let Command::RegisterNode { registration, .. } = &mut reg {
        registration.agent_version = "0.1.1".into();
    }
    s.apply(reg);
    s.apply(beat(15, "0.1.0"));
    let node = s.store.node(node_id(2)).unwrap().unwrap();
    assert_eq!(node.agent_version, "0.1.1");
    assert_eq!(node.last_seen, at(20));
    // A newer beat counts as ever.
    s.apply(beat(25, "0.1.1"));
    let node = s.store.node(node_id(2)).unwrap().unwrap();
    assert_eq!(node.status, NodeStatus::Degraded);
    assert_eq!(node.last_seen, at(25));
}

#[test]
fn a_beat_that_reports_a_fault_makes_the_node_degraded_and_one_without_makes_it_ready() {
    let mut s = TestStore::new();
    s.apply(register(2, 0));
    let beat = |seen: i64, degraded: Option<&str>| Command::Heartbeats {
        beats: vec![op_store::NodeBeat {
            node_id: node_id(2),
            seen_at: at(seen),
            agent_version: "0.1.0".into(),
            load: None,
            running: vec![],
            packages: vec![],
            stats: Default::default(),
            degraded: degraded.map(str::to_string),
            clock_skew_ms: None,
        }],
    };
    s.apply(beat(10, Some("state disk full: recording a run")));
    let node = s.store.node(node_id(2)).unwrap().unwrap();
    assert_eq!(node.status, NodeStatus::Degraded);
    assert_eq!(
        node.degraded.as_deref(),
        Some("state disk full: recording a run")
    );
    // A Degraded node goes NotReady when silent, like a Ready one.
    let r = s.apply(Command::SetNodeStatus {
        at: at(60),
        changes: vec![StatusChange {
            node_id: node_id(2),
            status: NodeStatus::NotReady,
            unless_seen_after: at(10),
        }],
    });
    assert!(matches!(r, CommandResult::StatusChanged { ref changes } if changes.len() == 1));
    s.apply(beat(70, None));
    let node = s.store.node(node_id(2)).unwrap().unwrap();
    assert_eq!(node.status, NodeStatus::Ready);
    assert_eq!(node.degraded, None);
}

#[test]
fn tokens_are_unique_by_active_name() {
    let mut s = TestStore::new();
    let token = |id: &str| Command::CreateToken {
        token: NewToken {
            id: id.into(),
            name: "ci".into(),
            scope: Scope::Operator,
            secret_sha256: "00".repeat(32),
            expires_at: None,
            node_id: None,
            policy: None,
        },
        at: at(0),
        actor: "admin".into(),
    };
    assert!(matches!(s.apply(token("t1")), CommandResult::Token { .. }));
    assert!(
        matches!(s.apply(token("t2")), CommandResult::Rejected { ref rejection } if rejection.code == "conflict")
    );
    s.apply(Command::RevokeToken {
        id: "t1".into(),
        at: at(1),
        actor: "admin".into(),
    });
    assert!(matches!(s.apply(token("t2")), CommandResult::Token { .. }));
    let tokens = s.store.tokens().unwrap();
    assert_eq!(tokens.len(), 2);
    assert!(tokens[0].info.revoked && !tokens[1].info.revoked);
}

/// The same log applied to two stores gives the same state: apply reads no clock and makes no ids.
#[test]
fn apply_is_deterministic() {
    let log: Vec<Command> = vec![
        register(2, 0),
        register(3, 0),
        save(once_job("o"), 1),
        save(cron_job("c"), 2),
        ingest(2, vec![run(2, "c", 1, 3, RunStatus::Ok)], 3),
        Command::CreateInvocation {
            invocation: Box::new(op_store::NewInvocation {
                id: Uuid::from_u128(7),
                kind: op_proto::invoke::InvocationKind::Exec,
                spec: JobSpec::new("adhoc", "true"),
                revision: 0,
                params: Default::default(),
                options: Default::default(),
                targets: vec![op_store::NewTarget {
                    node_id: node_id(2),
                    hostname: "node-2".into(),
                    ips: vec![],
                    run_id: Uuid::from_u128(8),
                    batch: 0,
                }],
                unreachable: vec![],
                release: vec![Uuid::from_u128(8)],
                retry_of: None,
                fire: None,
            }),
            at: at(3),
            actor: "ops".into(),
        },
        Command::AdvanceInvocation {
            id: Uuid::from_u128(7),
            at: at(4),
            release: vec![],
            expire: vec![Uuid::from_u128(8)],
            stop: None,
            finish: true,
        },
        Command::Prune {
            now: at(4),
            limits: Default::default(),
        },
        Command::AddPackageVersion {
            name: "p.sh".into(),
            sha256: "a".repeat(64),
            size: 1,
            deploy_dir: None,
            at: at(5),
            actor: "ops".into(),
            target: Default::default(),
        },
        Command::AddPackageVersion {
            name: "p.sh".into(),
            sha256: "b".repeat(64),
            size: 1,
            deploy_dir: Some("/opt".into()),
            at: at(5),
            actor: "ops".into(),
            target: Default::default(),
        },
        Command::RollbackPackage {
            name: "p.sh".into(),
            version: None,
            at: at(6),
            actor: "ops".into(),
        },
    ];
    let dump = |log: &[Command]| {
        let mut s = TestStore::new();
        let results: Vec<_> = log.iter().map(|c| s.apply(c.clone())).collect();
        (
            results,
            serde_json::to_string(&s.store.jobs().unwrap()).unwrap(),
            serde_json::to_string(&s.store.nodes().unwrap()).unwrap(),
            serde_json::to_string(&s.store.once_targets("o", None).unwrap()).unwrap(),
            serde_json::to_string(&s.store.runs(&RunQuery::default()).unwrap()).unwrap(),
            serde_json::to_string(&s.store.audit(None, 100).unwrap()).unwrap(),
            serde_json::to_string(&s.store.package_versions("p.sh").unwrap()).unwrap(),
            format!(
                "{:?}",
                s.store.invocation(Uuid::from_u128(7), true).unwrap()
            ),
        )
    };
    assert_eq!(dump(&log), dump(&log));
}

fn ingested(r: CommandResult) -> op_proto::agent::RunBatchAck {
    match r {
        CommandResult::RunsIngested { ack } => ack,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_run_is_stored_only_for_a_job_its_node_was_given_under_its_registered_host() {
    let mut s = TestStore::new();
    given(&mut s, &[2, 3], &[]);
    let mut only3 = cron_job("only-3");
    only3.white_hosts = vec![op_proto::hosts::HostPattern::parse("node-3").unwrap()];
    s.apply(save(only3.clone(), 1));
    let mut moving = cron_job("moving");
    moving.white_hosts = vec![op_proto::hosts::HostPattern::parse("node-2").unwrap()];
    s.apply(save(moving.clone(), 1));
    s.apply(save(cron_job("renamed"), 1));
    let mut by_name = cron_job("by-name");
    by_name.white_hosts = vec![op_proto::hosts::HostPattern::parse("node-2").unwrap()];
    s.apply(save(by_name, 1));

    // node-2 ran `moving`, then it moved to node-3; node-2 then registered under a new name
    // that `renamed`'s later selection excludes.
    moving.white_hosts = vec![op_proto::hosts::HostPattern::parse("node-3").unwrap()];
    s.apply(save(moving, 2));
    let mut renamed = cron_job("renamed");
    renamed.black_hosts = vec![op_proto::hosts::HostPattern::parse("other-2").unwrap()];
    s.apply(save(renamed, 3));
    let Command::RegisterNode {
        mut registration, ..
    } = register(2, 4)
    else {
        unreachable!()
    };
    registration.hostname = "other-2".into();
    s.apply(Command::RegisterNode {
        registration,
        at: at(4),
        actor: "agent".into(),
        enroll: None,
    });

    let mut forged = run(2, "only-3", 1, 5, RunStatus::Ok);
    forged.hostname = "node-3".into();
    let late = run(2, "moving", 1, 5, RunStatus::Ok);
    let before_rename = run(2, "renamed", 2, 5, RunStatus::Ok);
    let old_name = run(2, "by-name", 1, 5, RunStatus::Ok);
    let ack = ingested(s.apply(ingest(
        2,
        vec![
            forged.clone(),
            late.clone(),
            before_rename.clone(),
            old_name.clone(),
        ],
        10,
    )));
    assert_eq!(ack.accepted, 3, "{ack:?}");
    assert_eq!(ack.refused.len(), 1, "{ack:?}");
    assert_eq!(ack.refused[0].run_id, forged.run_id);
    assert!(s.store.run(forged.run_id).unwrap().is_none());
    let stored = s.store.run(late.run_id).unwrap().unwrap();
    assert_eq!(stored.hostname, "other-2", "the host as registered now");
    assert!(s.store.run(before_rename.run_id).unwrap().is_some());
    assert!(s.store.run(old_name.run_id).unwrap().is_some());
    // An unknown node's runs are all refused.
    let ack = ingested(s.apply(ingest(9, vec![run(9, "moving", 1, 5, RunStatus::Ok)], 11)));
    assert_eq!((ack.accepted, ack.refused.len()), (0, 1), "{ack:?}");
}

#[test]
fn an_identity_reset_retires_the_same_machine_and_carries_its_once_jobs_but_not_a_clones() {
    let mut s = TestStore::new();
    let reg = |n: u8, id: Uuid, machine: &str, reset: bool| {
        let Command::RegisterNode {
            mut registration, ..
        } = register(n, 0)
        else {
            unreachable!()
        };
        registration.node_id = id;
        registration.machine_id = machine.into();
        registration.reset = reset.then(op_proto::agent::IdentityReset::default);
        Command::RegisterNode {
            registration,
            at: at(10),
            actor: "agent".into(),
            enroll: None,
        }
    };
    s.apply(reg(2, node_id(2), "m-2", false));
    s.apply(save(once_job("setup"), 1));
    let mut done = run(2, "setup", 1, 2, RunStatus::Ok);
    done.trigger = Trigger::Once;
    s.apply(ingest(2, vec![done], 3));

    // A clone of node-2's image with its own machine id: a node of its own, nothing retired.
    let clone = Uuid::from_u128(0xc1);
    let CommandResult::NodeRegistered {
        replaced,
        once_history,
        ..
    } = s.apply(reg(2, clone, "m-clone", true))
    else {
        panic!()
    };
    assert!(replaced.is_empty() && once_history.is_empty());
    assert_eq!(
        s.store.node(node_id(2)).unwrap().unwrap().status,
        NodeStatus::Ready
    );

    // The same machine after its state was lost: node-2 is retired, its history carried.
    let rebuilt = Uuid::from_u128(0xb2);
    let CommandResult::NodeRegistered {
        replaced,
        once_history,
        ..
    } = s.apply(reg(2, rebuilt, "m-2", true))
    else {
        panic!()
    };
    assert_eq!(replaced, vec![node_id(2)]);
    assert_eq!(once_history.len(), 1);
    assert_eq!(
        (once_history[0].job.as_str(), once_history[0].revision),
        ("setup", 1)
    );
    assert_eq!(
        s.store.node(node_id(2)).unwrap().unwrap().status,
        NodeStatus::Left
    );
    let targets = s.store.once_targets("setup", None).unwrap();
    assert!(
        targets
            .iter()
            .any(|t| t.node_id == rebuilt && t.state == TargetState::Done),
        "{targets:?}"
    );
}

/// Notification rules (issue 19): saved whole, replaced by name, removed; a rule that fails the
/// structural checks is refused by apply too (a command that bypassed the API), leaving nothing.
#[test]
fn notify_rules_are_saved_replaced_removed_and_checked_in_apply() {
    use op_proto::events::{Channel, EventKind, NotifyFilter, NotifyRule};
    let mut s = TestStore::new();
    let rule = |url: &str, kinds: &[&str]| NotifyRule {
        name: "ops".into(),
        filter: NotifyFilter {
            kinds: kinds.iter().map(|k| EventKind::parse(k)).collect(),
            ..Default::default()
        },
        channel: Channel::Webhook {
            url: url.into(),
            template: None,
            secret_file: Some("/etc/op-agent/webhook.key".into()),
        },
    };
    let put = |rule: NotifyRule, secs: i64| Command::PutNotifyRule {
        rule: Box::new(rule),
        at: at(secs),
        actor: "admin".into(),
    };
    let CommandResult::NotifyRule {
        rule: saved,
        created,
    } = s.apply(put(rule("https://hooks.example.com/a", &["run.failed"]), 1))
    else {
        panic!()
    };
    assert!(created);
    assert_eq!(saved.updated_by, "admin");
    let CommandResult::NotifyRule { created, .. } =
        s.apply(put(rule("https://hooks.example.com/b", &[]), 2))
    else {
        panic!()
    };
    assert!(!created);
    let rules = s.store.notify_rules().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].rule.channel,
        rule("https://hooks.example.com/b", &[]).channel
    );
    assert_eq!(rules[0].updated_at, at(2));

    let audit_before = s.store.audit(None, 1000).unwrap().len();
    let r = s.apply(put(
        rule("https://hooks.example.com/c", &["run.exploded"]),
        3,
    ));
    assert!(
        matches!(r, CommandResult::Rejected { ref rejection } if rejection.code == "invalid"
            && rejection.message.contains("run.exploded")),
        "{r:?}"
    );
    assert_eq!(s.store.audit(None, 1000).unwrap().len(), audit_before);
    assert_eq!(
        s.store.notify_rule("ops").unwrap().unwrap().rule.channel,
        rule("https://hooks.example.com/b", &[]).channel
    );

    let remove = |secs| Command::RemoveNotifyRule {
        name: "ops".into(),
        at: at(secs),
        actor: "admin".into(),
    };
    assert_eq!(s.apply(remove(4)), CommandResult::Done);
    assert!(s.store.notify_rules().unwrap().is_empty());
    let r = s.apply(remove(5));
    assert!(
        matches!(r, CommandResult::Rejected { ref rejection } if rejection.code == "not_found"),
        "{r:?}"
    );
    let actions: Vec<String> = s
        .store
        .audit(None, 1000)
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .filter(|a| a.starts_with("notify."))
        .collect();
    assert_eq!(actions, ["notify.add", "notify.update", "notify.remove"]);
}

#[test]
fn facts_are_stored_bump_the_nodes_desired_state_and_keep_what_the_old_facts_selected() {
    let mut s = TestStore::new();
    given(&mut s, &[2], &[]);
    let mut big = cron_job("big");
    big.white_hosts = vec![op_proto::hosts::HostPattern::parse("fact.cpus>=8").unwrap()];
    s.apply(save(big, 1));
    let desired = |s: &TestStore| {
        let view = s.store.desired_view().unwrap();
        view.nodes
            .iter()
            .find(|(n, _)| n.node_id == node_id(2))
            .map(|(_, i)| *i)
            .unwrap()
    };
    let facts = |cpus| op_proto::facts::Facts {
        os: "debian".into(),
        cpus: Some(cpus),
        ..Default::default()
    };
    let set = |cpus| Command::SetNodeFacts {
        node_id: node_id(2),
        facts: Box::new(facts(cpus)),
        at: at(2),
    };
    let before = desired(&s);
    assert!(matches!(
        s.apply(set(16)),
        CommandResult::NodeFactsSet { changed: true, .. }
    ));
    let node = s.store.node(node_id(2)).unwrap().unwrap();
    assert_eq!(node.facts, Some(facts(16)));
    assert!(big_selects(&s));
    assert!(desired(&s) > before, "the node's desired state moved");
    // The same facts again change nothing; a registration keeps them.
    let index = desired(&s);
    assert!(matches!(
        s.apply(set(16)),
        CommandResult::NodeFactsSet { changed: false, .. }
    ));
    assert_eq!(desired(&s), index);
    s.apply(register(2, 3));
    assert_eq!(
        s.store.node(node_id(2)).unwrap().unwrap().facts,
        Some(facts(16))
    );
    // Fewer CPUs: `big` no longer selects the node, yet a run it sent under the old facts is
    // still stored (it was given the job).
    s.apply(set(2));
    assert!(!big_selects(&s));
    let late = run(2, "big", 1, 5, RunStatus::Ok);
    let ack = ingested(s.apply(ingest(2, vec![late.clone()], 10)));
    assert_eq!(ack.accepted, 1, "{ack:?}");
    // A forgotten node takes no facts.
    s.apply(Command::ForgetNode {
        node_id: node_id(2),
        at: at(11),
        actor: "admin".into(),
    });
    assert!(matches!(s.apply(set(4)), CommandResult::Rejected { .. }));

    fn big_selects(s: &TestStore) -> bool {
        let job = s.store.job("big").unwrap().unwrap();
        let node = s.store.node(node_id(2)).unwrap().unwrap();
        job.spec.selector().matches(&node.identity())
    }
}

#[test]
fn stats_sum_the_agents_outboxes_and_drops_over_nodes_not_left() {
    let mut s = TestStore::new();
    let beat = |n: u8, outbox: u64, dropped: u64| op_store::NodeBeat {
        stats: op_proto::node::AgentStats {
            outbox_depth: outbox,
            dropped_runs: dropped,
            ..Default::default()
        },
        ..beat(n, 50)
    };
    for n in [2, 3, 4] {
        s.apply(register(n, 0));
    }
    s.apply(Command::Heartbeats {
        beats: vec![beat(2, 3, 1), beat(3, 4, 2), beat(4, 100, 100)],
    });
    s.apply(Command::ForgetNode {
        node_id: node_id(4),
        at: at(60),
        actor: "admin".into(),
    });
    let stats = s.store.stats().unwrap();
    assert_eq!((stats.agent_outbox_runs, stats.agent_dropped_runs), (7, 3));

    // A database written before the columns (schema 19): the migration fills them from the
    // records, so the first scrape after an upgrade says the same.
    let path = s.dir.path().join("state.db");
    drop(s.store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP INDEX nodes_stats;
         ALTER TABLE nodes DROP COLUMN outbox_depth; ALTER TABLE nodes DROP COLUMN dropped_runs;
         PRAGMA user_version = 19;",
    )
    .unwrap();
    drop(conn);
    let store = op_store::Store::open(&path).unwrap();
    let stats = store.stats().unwrap();
    assert_eq!((stats.agent_outbox_runs, stats.agent_dropped_runs), (7, 3));
}

#[test]
fn the_liveness_columns_say_what_the_records_say() {
    let mut s = TestStore::new();
    for n in [2, 3, 4] {
        s.apply(register(n, 0));
    }
    s.apply(Command::Heartbeats {
        beats: vec![op_store::NodeBeat {
            degraded: Some("state disk full".into()),
            ..beat(3, 50)
        }],
    });
    s.apply(Command::SetNodeStatus {
        at: at(60),
        changes: vec![StatusChange {
            node_id: node_id(4),
            status: NodeStatus::NotReady,
            unless_seen_after: at(0),
        }],
    });
    let mut seen = s.store.nodes_seen().unwrap();
    seen.sort_by_key(|n| n.node_id);
    let mut records = s.store.nodes().unwrap();
    records.sort_by_key(|n| n.node_id);
    let from_records: Vec<op_store::NodeSeen> = records
        .iter()
        .map(|n| op_store::NodeSeen {
            node_id: n.node_id,
            hostname: n.hostname.clone(),
            status: n.status,
            last_seen: n.last_seen,
        })
        .collect();
    assert_eq!(seen, from_records);
    let statuses: Vec<NodeStatus> = seen.iter().map(|n| n.status).collect();
    assert!(statuses.contains(&NodeStatus::NotReady));
    assert_eq!(
        seen.iter()
            .find(|n| n.node_id == node_id(3))
            .unwrap()
            .last_seen,
        at(50)
    );
}
