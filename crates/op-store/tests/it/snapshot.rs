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
    let want = dump(&src.store);
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
