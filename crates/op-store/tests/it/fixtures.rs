//! Persisted-format fixtures: one file per `Command` variant in `tests/data/commands/`. Raft log
//! entries and snapshots hold these forms, so a change that breaks reading an old file fails here.
//! Set `OP_WRITE_FIXTURES=1` to (re)write the files after an intended, additive change.

use std::collections::BTreeSet;
use std::path::PathBuf;

use op_proto::api::Scope;
use op_proto::incidents::FireKey;
use op_proto::invoke::{BatchSize, InvocationKind, InvocationOptions};
use op_proto::{JobSpec, NodeStatus, RunStatus, Trigger};
use op_store::{
    Command, FireToClose, MissingHost, NewInvocation, NewTarget, NewToken, NodeBeat, NodeRuns,
    RetentionLimits, StatusChange,
};

use crate::common::*;

fn samples() -> Vec<Command> {
    let mut spec = JobSpec::from_task_json(
        r#"{"JobName":"cycleTest.py","Command":"python cycleTest.py","CronExpr":"*/5 * * * * * *",
            "WhiteHosts":["10.0.0.0/24"],"BlackHosts":["web-*"],"Timeout":10}"#,
    )
    .unwrap();
    spec.labels.insert("role".into(), "db".into());
    let mut r = run(2, "ls-l", 3, 0, RunStatus::Ok);
    r.run_id = uuid::Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001);
    r.trigger = Trigger::Once;
    let inv = uuid::Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_00a1);
    let target = uuid::Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0002);
    vec![
        Command::InitCluster {
            cluster_id: "6f1c1c2e-0000-4000-8000-000000000001".into(),
            at: t0(),
        },
        Command::SaveJob {
            spec: Box::new(spec),
            at: t0(),
            actor: "admin".into(),
        },
        Command::DeleteJob {
            name: "ls-l".into(),
            at: t0(),
            actor: "admin".into(),
        },
        Command::SetJobEnabled {
            name: "ls-l".into(),
            enabled: false,
            at: t0(),
            actor: "ops".into(),
        },
        register(2, 0),
        Command::Heartbeats {
            beats: vec![NodeBeat {
                node_id: node_id(2),
                seen_at: t0(),
                agent_version: "0.1.0".into(),
                load: None,
                running: vec![],
                packages: vec![],
                stats: Default::default(),
                degraded: None,
                clock_skew_ms: None,
            }],
        },
        Command::SetNodeStatus {
            at: t0(),
            changes: vec![StatusChange {
                node_id: node_id(3),
                status: NodeStatus::NotReady,
                unless_seen_after: at(-30),
            }],
        },
        Command::ForgetNode {
            node_id: node_id(4),
            at: t0(),
            actor: "admin".into(),
        },
        Command::SetNodeFacts {
            node_id: node_id(2),
            facts: Box::new(op_proto::facts::Facts {
                os: "ubuntu".into(),
                os_version: "22.04".into(),
                cpus: Some(8),
                memory_mb: Some(16_000),
                disks: vec![op_proto::facts::Disk {
                    mount: "/".into(),
                    device: "/dev/sda1".into(),
                    fs: "ext4".into(),
                    size_bytes: 100_000_000_000,
                }],
                virt: "kvm".into(),
                agent_version: "0.1.0".into(),
                ..Default::default()
            }),
            at: t0(),
        },
        ingest(2, vec![r.clone()], 5),
        Command::IngestRunBatches {
            at: t0(),
            batches: vec![NodeRuns {
                node_id: node_id(2),
                runs: vec![r],
            }],
        },
        Command::Prune {
            now: t0(),
            limits: RetentionLimits::default(),
        },
        Command::CreateToken {
            token: NewToken {
                id: "0a1b2c3d4e5f".into(),
                name: "ci".into(),
                scope: Scope::Operator,
                secret_sha256: "ab".repeat(32),
                expires_at: None,
                node_id: None,
                policy: None,
            },
            at: t0(),
            actor: "admin".into(),
        },
        Command::RevokeToken {
            id: "0a1b2c3d4e5f".into(),
            at: t0(),
            actor: "admin".into(),
        },
        Command::AddPackageVersion {
            name: "test.py".into(),
            sha256: "5b".repeat(32),
            size: 1234,
            deploy_dir: Some("/data/op-agent/src".into()),
            at: t0(),
            actor: "ops".into(),
            target: Default::default(),
        },
        Command::RollbackPackage {
            name: "test.py".into(),
            version: Some(1764057600),
            at: t0(),
            actor: "ops".into(),
        },
        Command::DeletePackageVersion {
            name: "test.py".into(),
            version: 1764057600,
            at: t0(),
            actor: "ops".into(),
        },
        Command::CreateInvocation {
            invocation: Box::new(NewInvocation {
                id: inv,
                kind: InvocationKind::Job,
                spec: JobSpec::from_task_json(
                    r#"{"JobName":"apiTest.py","Command":"python apiTest.py --host '{host}'",
                        "Params":["host"],"Timeout":30}"#,
                )
                .unwrap(),
                revision: 4,
                params: [("host".to_string(), "10.0.0.7".to_string())].into(),
                options: InvocationOptions {
                    max_concurrency: Some(10),
                    batch: Some(BatchSize::Percent(50)),
                    batch_hosts: Some(1),
                    batch_wait_secs: 5,
                    max_failures: Some(1),
                    deadline_secs: 90,
                    ack_secs: None,
                },
                targets: vec![
                    NewTarget {
                        node_id: node_id(2),
                        hostname: "node-2".into(),
                        ips: vec!["127.0.0.2".parse().unwrap()],
                        run_id: target,
                        batch: 0,
                    },
                    NewTarget {
                        node_id: node_id(3),
                        hostname: "node-3".into(),
                        ips: vec!["127.0.0.3".parse().unwrap()],
                        run_id: uuid::Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0003),
                        batch: 1,
                    },
                ],
                unreachable: vec![MissingHost {
                    host: "db-9".into(),
                    reason: "node is NotReady".into(),
                }],
                release: vec![target],
                retry_of: None,
                fire: None,
            }),
            at: t0(),
            actor: "ops".into(),
        },
        Command::AdvanceInvocation {
            id: inv,
            at: t0(),
            release: vec![uuid::Uuid::from_u128(
                0x0193_0000_0000_7000_8000_0000_0000_0003,
            )],
            expire: vec![target],
            stop: Some("stopped: 1 host failed (max_failures 1)".into()),
            finish: true,
        },
        Command::CancelInvocation {
            id: inv,
            at: t0(),
            actor: "ops".into(),
        },
        Command::RequestOutput {
            request_id: uuid::Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_00b1),
            node_id: node_id(2),
            run_id: target,
            offset: 65536,
            reply_to: "http://10.0.0.1:8090".into(),
            at: t0(),
        },
        Command::PutNotifyRule {
            rule: Box::new(
                serde_json::from_str(
                    r#"{"name":"ops-slack","filter":{"kinds":["run.failed"],"jobs":["backup*"],
                        "labels":{"role":"db"},"min_hosts":"10%"},"channel":{"type":"webhook",
                        "url":"https://hooks.example.com/op","template":null,
                        "secret_file":"/etc/op-agent/webhook.key"}}"#,
                )
                .unwrap(),
            ),
            at: t0(),
            actor: "admin".into(),
        },
        Command::RemoveNotifyRule {
            name: "ops-slack".into(),
            at: t0(),
            actor: "admin".into(),
        },
        Command::CloseFires {
            at: t0(),
            fires: vec![FireToClose {
                fire: FireKey::Once {
                    job: "ls-l".into(),
                    revision: 3,
                },
                selected: vec!["web-1".into(), "web-2".into()],
            }],
        },
        Command::FlushEvents { at: t0() },
        Command::NotifyDelivered {
            rule: "ops-slack".into(),
            event_id: 42,
            at: t0(),
        },
        Command::NotifyFailed {
            rule: "ops-slack".into(),
            event_id: 43,
            failures: 3,
            error: "webhook https://hooks.slack.com: connection refused".into(),
            at: t0(),
        },
        Command::JudgeFires {
            at: t0(),
            fires: vec![op_proto::judged::JudgedFire {
                job: "backup.sh".into(),
                fire: t0(),
                fire_label: "03:00".into(),
                expected: 3,
                counts: [("ok".to_string(), 2), ("missed".to_string(), 1)].into(),
                missed_by_reason: [("NotReady".to_string(), 1)].into(),
                hosts: vec![op_proto::judged::JudgedHost {
                    host: "web-2".into(),
                    labels: Default::default(),
                    outcome: "missed".into(),
                    reason: "NotReady".into(),
                }],
                sentences: vec!["backup.sh missed its 03:00 fire on 1/3 hosts (1 NotReady)".into()],
            }],
            overrunning: vec![op_proto::judged::OverrunningRun {
                run_id: uuid::Uuid::from_u128(9),
                job: "hang".into(),
                host: "web-1".into(),
                labels: Default::default(),
                started_at: t0(),
                max_duration_secs: 60,
            }],
            skewed: Some(vec![op_proto::judged::SkewedHost {
                host: "web-3".into(),
                labels: Default::default(),
                skew_ms: 12_000,
            }]),
        },
        Command::SetSecret {
            name: "db/pw".into(),
            sealed: sealed(),
            at: t0(),
            actor: "admin".into(),
        },
        Command::RemoveSecret {
            name: "db/pw".into(),
            at: t0(),
            actor: "admin".into(),
        },
        Command::RekeySecrets {
            sealed: [("db/pw".to_string(), sealed())].into(),
            at: t0(),
            actor: "op-manager".into(),
            replaces: [("db/pw".to_string(), "0b0a09080706050403020100".to_string())].into(),
        },
        Command::StartRollout {
            rollout: op_store::NewRollout {
                id: uuid::Uuid::from_u128(21),
                plan: op_proto::rollout::RolloutRequest::from_flags(
                    "1,10%",
                    Some("5m"),
                    Some("2"),
                    true,
                )
                .plan()
                .unwrap(),
            },
            change: Box::new(Command::AddPackageVersion {
                name: "tool.sh".into(),
                sha256: "ab".repeat(32),
                size: 10,
                deploy_dir: None,
                at: t0(),
                actor: "admin".into(),
                target: Default::default(),
            }),
        },
        Command::AdvanceRollout {
            id: uuid::Uuid::from_u128(21),
            from_stage: 0,
            at: t0(),
        },
        Command::HaltRollout {
            id: uuid::Uuid::from_u128(21),
            reason: "1 failed host reached HaltOn 1".into(),
            failed_hosts: vec!["web-1".into()],
            at: t0(),
        },
        Command::RolloutAction {
            id: uuid::Uuid::from_u128(21),
            action: op_proto::rollout::RolloutAction::Pause,
            at: t0(),
            actor: "admin".into(),
        },
        Command::SetPackageRollout {
            name: "tool.sh".into(),
            plan: Some(
                op_proto::rollout::RolloutRequest::from_flags("1,10%", Some("5m"), Some("2"), true)
                    .plan()
                    .unwrap(),
            ),
            at: t0(),
            actor: "admin".into(),
        },
    ]
}

fn sealed() -> op_store::SealedSecret {
    op_store::SealedSecret {
        key_id: "0a1b2c3d4e5f6071".into(),
        nonce: "000102030405060708090a0b".into(),
        ciphertext: "8f3e".repeat(12),
    }
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/commands")
}

#[test]
fn every_command_variant_has_a_fixture_that_reads_back() {
    let samples = samples();
    if std::env::var_os("OP_WRITE_FIXTURES").is_some() {
        for c in &samples {
            let text = serde_json::to_string_pretty(c).unwrap() + "\n";
            std::fs::write(dir().join(format!("{}.json", c.kind())), text).unwrap();
        }
    }
    let mut seen = BTreeSet::new();
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let command: Command =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            path.file_stem().unwrap().to_str().unwrap(),
            command.kind(),
            "{} holds another variant",
            path.display()
        );
        // What we write today is what the file says (so the format did not drift silently).
        let sample = samples.iter().find(|c| c.kind() == command.kind()).unwrap();
        assert_eq!(&command, sample, "{}", path.display());
        let again: serde_json::Value = serde_json::to_value(&command).unwrap();
        let file: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(again, file, "{} does not round-trip", path.display());
        seen.insert(command.kind());
    }
    let all: BTreeSet<_> = samples.iter().map(|c| c.kind()).collect();
    assert_eq!(seen, all, "a Command variant lacks a fixture file");
}

/// A state database written by schema version 1 (`tests/data/state-v1.db`, frozen: this build
/// writes a newer schema) opens with this build and reads back: migrations and row decoding keep
/// accepting old files.
#[test]
fn schema_v1_database_still_opens_and_reads() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/state-v1.db");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("state.db");
    std::fs::copy(&fixture, &copy).unwrap();
    let store = op_store::Store::open(&copy).unwrap();
    let jobs: Vec<_> = store
        .jobs()
        .unwrap()
        .into_iter()
        .map(|j| (j.spec.name, j.revision))
        .collect();
    assert_eq!(jobs, [("cron".to_string(), 1), ("once".to_string(), 1)]);
    let nodes: Vec<_> = store
        .nodes()
        .unwrap()
        .into_iter()
        .map(|n| (n.hostname, n.status))
        .collect();
    assert_eq!(
        nodes,
        [
            ("node-2".to_string(), NodeStatus::Ready),
            ("node-3".to_string(), NodeStatus::Ready),
            ("node-4".to_string(), NodeStatus::Left)
        ]
    );
    assert_eq!(
        store
            .runs(&op_proto::api::RunQuery::default())
            .unwrap()
            .len(),
        20
    );
    assert_eq!(store.once_targets("once", None).unwrap().len(), 3);
    let tokens = store.tokens().unwrap();
    assert_eq!((tokens.len(), tokens[0].info.scope), (1, Scope::Viewer));
    assert_eq!(
        store.meta(op_store::META_CLUSTER_ID).unwrap().as_deref(),
        Some("c-1")
    );
    assert!(store.audit(None, 100).unwrap().len() >= 4);
    // Migrated to the packages schema, with no packages yet.
    assert!(store.packages().unwrap().is_empty());
    assert!(store.desired_view().unwrap().packages.is_empty());
}

/// A state database written by schema version 2 (`tests/data/state-v2.db`: packages) reads back.
#[test]
fn schema_v2_database_still_opens_and_reads() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/state-v2.db");
    if std::env::var_os("OP_WRITE_FIXTURES").is_some() {
        let mut s = TestStore::new();
        fill(&mut s);
        let _ = std::fs::remove_file(&fixture);
        s.store.snapshot_to(&fixture).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("state.db");
    std::fs::copy(&fixture, &copy).unwrap();
    let store = op_store::Store::open(&copy).unwrap();
    assert_eq!(store.jobs().unwrap().len(), 2);
    let versions = store.package_versions("test.py").unwrap();
    let t = at(5).timestamp() as u64;
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.version, v.current, v.deploy_dir.as_str(), v.size))
            .collect::<Vec<_>>(),
        [
            (t, true, "/data/op-agent/src", 100),
            (t + 1, false, "/data/op-agent/src", 100)
        ]
    );
    assert_eq!(store.packages().unwrap()[0].sha256, "a".repeat(64));
    assert_eq!(store.referenced_blobs().unwrap().len(), 2);
}
