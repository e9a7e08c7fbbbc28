//! Package commands: deterministic versions, inherited deploy dirs, rollback, guarded deletes,
//! and what the sync view hands every node.

use op_proto::package::{InstalledPackage, PackageState};
use op_store::{Command, CommandResult, NodeBeat};

use crate::common::*;

fn sha(c: char) -> String {
    c.to_string().repeat(64)
}

fn upload(name: &str, c: char, deploy_dir: Option<&str>, at_secs: i64) -> Command {
    Command::AddPackageVersion {
        name: name.into(),
        sha256: sha(c),
        size: 10,
        deploy_dir: deploy_dir.map(str::to_string),
        at: at(at_secs),
        actor: "ops".into(),
        target: Default::default(),
    }
}

fn added(r: CommandResult) -> op_proto::package::PackageVersion {
    match r {
        CommandResult::Package { version } => *version,
        other => panic!("{other:?}"),
    }
}

fn rejected_code(r: CommandResult) -> String {
    match r {
        CommandResult::Rejected { rejection } => rejection.code.into(),
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn versions_are_unix_seconds_yet_strictly_increase() {
    let mut s = TestStore::new();
    let t = at(0).timestamp() as u64;
    let v1 = added(s.apply(upload("test.py", 'a', Some("/data/src/"), 0)));
    assert_eq!((v1.version, v1.current), (t, true));
    assert_eq!(v1.deploy_dir, "/data/src");
    // Same second, and a clock that went back: still +1.
    let v2 = added(s.apply(upload("test.py", 'b', None, 0)));
    let v3 = added(s.apply(upload("test.py", 'c', None, -100)));
    assert_eq!((v2.version, v3.version), (t + 1, t + 2));
    // No deploy dir given: the package's last one is inherited.
    assert_eq!(v3.deploy_dir, "/data/src");
    // An explicit empty dir means the agent's default, and is inherited as such.
    let v4 = added(s.apply(upload("test.py", 'd', Some(""), 50)));
    assert_eq!((v4.version, v4.deploy_dir.as_str()), (t + 50, ""));
    let v5 = added(s.apply(upload("test.py", 'e', None, 60)));
    assert_eq!(v5.deploy_dir, "");
    // A new package starts with no inherited dir.
    let other = added(s.apply(upload("other.sh", 'a', None, 0)));
    assert_eq!(other.deploy_dir, "");

    let list = s.store.packages().unwrap();
    assert_eq!(
        list.iter()
            .map(|p| (p.name.as_str(), p.version))
            .collect::<Vec<_>>(),
        [("other.sh", t), ("test.py", t + 60)]
    );
    let versions = s.store.package_versions("test.py").unwrap();
    assert_eq!(versions.len(), 5);
    assert!(versions.windows(2).all(|w| w[0].version < w[1].version));
    assert_eq!(
        versions.iter().filter(|v| v.current).count(),
        1,
        "exactly one current version"
    );
    let audit = s.store.audit(None, 100).unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.action == "package.upload")
            .count(),
        6
    );
}

#[test]
fn bad_input_is_refused_deterministically() {
    let mut s = TestStore::new();
    assert_eq!(
        rejected_code(s.apply(upload(".hidden", 'a', None, 0))),
        "invalid"
    );
    assert_eq!(
        rejected_code(s.apply(upload("x.py", 'a', Some("relative/dir"), 0))),
        "invalid"
    );
    let r = s.apply(Command::AddPackageVersion {
        name: "x.py".into(),
        sha256: "XYZ".into(),
        size: 1,
        deploy_dir: None,
        at: at(0),
        actor: "ops".into(),
        target: Default::default(),
    });
    assert_eq!(rejected_code(r), "invalid");
    assert!(s.store.packages().unwrap().is_empty());
}

#[test]
fn rollback_moves_current_and_new_uploads_win_again() {
    let mut s = TestStore::new();
    let v1 = added(s.apply(upload("p.sh", 'a', None, 0)));
    let v2 = added(s.apply(upload("p.sh", 'b', None, 10)));
    let v3 = added(s.apply(upload("p.sh", 'c', None, 20)));
    let rollback = |version| Command::RollbackPackage {
        name: "p.sh".into(),
        version,
        at: at(30),
        actor: "ops".into(),
    };
    // Default: the previous version.
    let r = added(s.apply(rollback(None)));
    assert_eq!((r.version, r.sha256.clone()), (v2.version, sha('b')));
    let r = added(s.apply(rollback(None)));
    assert_eq!(r.version, v1.version);
    assert_eq!(rejected_code(s.apply(rollback(None))), "conflict");
    // Forward to any stored version.
    assert_eq!(
        added(s.apply(rollback(Some(v3.version)))).version,
        v3.version
    );
    assert_eq!(rejected_code(s.apply(rollback(Some(12345)))), "not_found");
    let r = s.apply(Command::RollbackPackage {
        name: "nope".into(),
        version: None,
        at: at(30),
        actor: "ops".into(),
    });
    assert_eq!(rejected_code(r), "not_found");
    added(s.apply(rollback(Some(v1.version))));
    // An upload after a rollback becomes current.
    let v4 = added(s.apply(upload("p.sh", 'd', None, 40)));
    assert_eq!(s.store.packages().unwrap()[0].version, v4.version);
    let view = s.store.desired_view().unwrap();
    assert_eq!(view.packages.len(), 1);
    assert_eq!(
        (
            view.packages[0].0.version,
            view.packages[0].0.sha256.clone()
        ),
        (v4.version, sha('d'))
    );
}

#[test]
fn delete_refuses_current_and_installed_versions_and_releases_blobs() {
    let mut s = TestStore::new();
    s.apply(register(2, 0));
    let v1 = added(s.apply(upload("p.sh", 'a', None, 0)));
    let v2 = added(s.apply(upload("p.sh", 'b', None, 10)));
    let delete = |version| Command::DeletePackageVersion {
        name: "p.sh".into(),
        version,
        at: at(20),
        actor: "ops".into(),
    };
    assert_eq!(rejected_code(s.apply(delete(v2.version))), "conflict");
    assert_eq!(rejected_code(s.apply(delete(999))), "not_found");
    // node-2 still reports v1 in place (it is downloading v2).
    s.apply(Command::Heartbeats {
        beats: vec![NodeBeat {
            node_id: node_id(2),
            seen_at: at(15),
            agent_version: "0.1.0".into(),
            load: None,
            running: vec![],
            packages: vec![InstalledPackage {
                name: "p.sh".into(),
                version: v1.version,
                sha256: sha('a'),
                state: PackageState::Downloading,
                target_version: Some(v2.version),
                error: None,
                fetched: None,
            }],
            stats: Default::default(),
            degraded: None,
            clock_skew_ms: None,
        }],
    });
    let r = s.apply(delete(v1.version));
    match &r {
        CommandResult::Rejected { rejection } => {
            assert!(
                rejection.message.contains("node-2"),
                "{}",
                rejection.message
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(s.store.referenced_blobs().unwrap().contains(&sha('a')));
    // Once the node moved on, the old version can go, and its blob is no longer referenced.
    s.apply(Command::Heartbeats {
        beats: vec![NodeBeat {
            node_id: node_id(2),
            seen_at: at(16),
            agent_version: "0.1.0".into(),
            load: None,
            running: vec![],
            packages: vec![InstalledPackage {
                name: "p.sh".into(),
                version: v2.version,
                sha256: sha('b'),
                state: PackageState::Installed,
                target_version: None,
                error: None,
                fetched: None,
            }],
            stats: Default::default(),
            degraded: None,
            clock_skew_ms: None,
        }],
    });
    s.index += 1;
    let (results, changes) = s
        .store
        .apply_batch(
            &[op_store::Entry {
                index: s.index,
                command: Some(&delete(v1.version)),
            }],
            "{}",
            None,
        )
        .unwrap();
    assert!(matches!(
        results[0],
        CommandResult::PackageVersionDeleted { .. }
    ));
    assert!(changes.blobs_released);
    assert_eq!(
        s.store
            .referenced_blobs()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        [sha('b')]
    );
    // The number of a deleted version is never given again.
    let v3 = added(s.apply(upload("p.sh", 'c', None, 10)));
    assert_eq!(v3.version, v2.version + 1);
    let actions: Vec<_> = s
        .store
        .audit(None, 100)
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .filter(|a| a.starts_with("package."))
        .collect();
    assert_eq!(
        actions,
        [
            "package.upload",
            "package.upload",
            "package.delete",
            "package.upload"
        ]
    );
}

#[test]
fn targeting_belongs_to_the_version_and_old_entries_decode_without_it() {
    let mut s = TestStore::new();
    let target =
        op_proto::package::parse_target(&["db-*".into()], &["db-3".into()], &["role=db".into()])
            .unwrap();
    let mut cmd = upload("schema.sql", 'a', None, 0);
    if let Command::AddPackageVersion { target: t, .. } = &mut cmd {
        *t = target.clone();
    }
    let v1 = added(s.apply(cmd));
    assert_eq!(v1.target, target);
    let view = s.store.desired_view().unwrap();
    assert_eq!(
        view.packages[0].1, target,
        "the hub gets the targeting with the ref"
    );
    // A new version without targeting goes everywhere again: targeting is not inherited.
    let v2 = added(s.apply(upload("schema.sql", 'b', None, 10)));
    assert!(op_proto::package::is_everywhere(&v2.target));
    let versions = s.store.package_versions("schema.sql").unwrap();
    assert_eq!(versions[0].target, target, "the old version keeps its own");
    // A rollback to v1 brings v1's targeting back with it.
    added(s.apply(Command::RollbackPackage {
        name: "schema.sql".into(),
        version: Some(v1.version),
        at: at(20),
        actor: "ops".into(),
    }));
    assert_eq!(s.store.desired_view().unwrap().packages[0].1, target);

    // A raft entry written before targeting existed has no `target`: it decodes to everywhere,
    // and an untargeted upload is written without the field, as before.
    let old = r#"{"type":"add_package_version","name":"a.py","sha256":"ab","size":1,"deploy_dir":null,"at":"2026-01-01T00:00:00Z","actor":"ops"}"#;
    let decoded: Command = serde_json::from_str(old).unwrap();
    let Command::AddPackageVersion { target, .. } = &decoded else {
        panic!("{decoded:?}")
    };
    assert!(op_proto::package::is_everywhere(target));
    assert!(!serde_json::to_string(&decoded).unwrap().contains("target"));
}

#[test]
fn a_bad_target_label_is_refused_and_nothing_is_stored() {
    let mut s = TestStore::new();
    let mut cmd = upload("x.py", 'a', None, 0);
    if let Command::AddPackageVersion { target, .. } = &mut cmd {
        target.labels.insert("ro le".into(), "db".into());
    }
    assert_eq!(rejected_code(s.apply(cmd)), "invalid");
    assert!(s.store.packages().unwrap().is_empty());
    assert!(s.store.package_versions("x.py").unwrap().is_empty());
}
