//! Snapshot build (`VACUUM INTO`) and install round-trip every table and the raft metadata.

use op_proto::api::RunQuery;
use op_store::{META_LAST_APPLIED, META_MEMBERSHIP, Store};

use crate::common::*;

fn dump(store: &Store) -> Vec<String> {
    vec![
        serde_json::to_string(&store.jobs().unwrap()).unwrap(),
        serde_json::to_string(&store.nodes().unwrap()).unwrap(),
        serde_json::to_string(&store.once_targets("once", None).unwrap()).unwrap(),
        serde_json::to_string(&store.runs(&RunQuery::default()).unwrap()).unwrap(),
        serde_json::to_string(&store.tokens().unwrap()).unwrap(),
        serde_json::to_string(&store.audit(None, 1000).unwrap()).unwrap(),
        serde_json::to_string(&store.package_versions("test.py").unwrap()).unwrap(),
        format!("{:?}", store.desired_view().unwrap().packages),
        format!("{:?}", store.desired_view().unwrap().pending),
        format!("{:?}", store.desired_view().unwrap().directives),
        format!("{:?}", store.invocations(&Default::default()).unwrap()),
        format!(
            "{:?}",
            store.invocation(uuid::Uuid::from_u128(7), true).unwrap()
        ),
        format!("{:?}", store.stats().unwrap()),
        format!(
            "{:?} {:?} {:?}",
            store.meta(META_LAST_APPLIED).unwrap(),
            store.meta(META_MEMBERSHIP).unwrap(),
            store.meta(op_store::META_CLUSTER_ID).unwrap()
        ),
    ]
}

#[test]
fn snapshot_install_round_trips_all_tables() {
    let mut src = TestStore::new();
    fill(&mut src);
    src.apply(op_store::Command::CreateInvocation {
        invocation: Box::new(op_store::NewInvocation {
            id: uuid::Uuid::from_u128(7),
            kind: op_proto::invoke::InvocationKind::Exec,
            spec: op_proto::JobSpec::new("adhoc", "uptime"),
            revision: 0,
            params: Default::default(),
            options: Default::default(),
            targets: vec![op_store::NewTarget {
                node_id: node_id(2),
                hostname: "node-2".into(),
                ips: vec![],
                run_id: uuid::Uuid::from_u128(8),
                batch: 0,
            }],
            unreachable: vec![],
            release: vec![uuid::Uuid::from_u128(8)],
            retry_of: None,
            fire: None,
        }),
        at: at(40),
        actor: "ops".into(),
    });
    // The raft metadata rides with the last batch, as in `fill`.
    src.index += 1;
    src.store
        .apply_batch(
            &[op_store::Entry {
                index: src.index,
                command: None,
            }],
            "{\"last\":true}",
            Some("{\"membership\":1}"),
        )
        .unwrap();
    let want = dump(&src.store);
    assert!(
        want.iter()
            .any(|w| w.contains("Run(RunDirective") && w.contains("uptime")),
        "the invocation is a directive"
    );
    assert!(want[3].len() > 100, "runs were stored");

    let snap = src.dir.path().join("snap.db");
    src.store.snapshot_to(&snap).unwrap();
    assert_eq!(
        Store::meta_of_file(&snap, META_LAST_APPLIED)
            .unwrap()
            .as_deref(),
        Some("{\"last\":true}")
    );

    // Install over a store that has other, newer-looking data: all of it is replaced.
    let mut dst = TestStore::new();
    dst.apply(save(cron_job("other"), 0));
    let incoming = dst.dir.path().join("incoming.db");
    std::fs::copy(&snap, &incoming).unwrap();
    dst.store.install_from(&incoming).unwrap();
    assert_eq!(dump(&dst.store), want);
    assert!(!incoming.exists(), "the snapshot file was moved into place");

    // The installed store keeps working: apply on top of it.
    dst.index = 1000;
    dst.apply(save(cron_job("after"), 100));
    assert_eq!(dst.store.jobs().unwrap().len(), 3);
    // And survives a reopen.
    let path = dst.store.path().to_path_buf();
    drop(dst.store);
    let reopened = Store::open(path).unwrap();
    assert_eq!(reopened.jobs().unwrap().len(), 3);
}
