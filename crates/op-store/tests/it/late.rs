//! `NewHosts` once-jobs: late hosts get a waiting target, admitted in arrival order while fewer
//! than `NewHostsAtOnce` late targets are pending or running; a host never gets a second target
//! of a revision; a once-job without `NewHosts` never reaches a later host.

use op_proto::api::TargetState;
use op_proto::{RunStatus, Trigger};
use op_store::{Command, CommandResult};

use crate::common::*;

fn states(s: &TestStore, job: &str) -> Vec<(u8, TargetState, bool)> {
    let mut t: Vec<_> = s
        .store
        .once_targets(job, None)
        .unwrap()
        .into_iter()
        .map(|t| {
            let n = (t.node_id.as_u128() - 0x1000) as u8;
            (n, t.state, t.late)
        })
        .collect();
    t.sort_by_key(|x| x.0);
    t
}

fn finish(s: &mut TestStore, n: u8, job: &str, status: RunStatus, at_secs: i64) {
    let mut r = run(n, job, 1, at_secs, status);
    r.trigger = Trigger::Once;
    s.apply(ingest(n, vec![r], at_secs));
}

#[test]
fn late_hosts_wait_their_turn_in_arrival_order() {
    use TargetState::{Done, Failed, Pending, Waiting};
    let mut s = TestStore::new();
    s.apply(register(1, 0));
    let mut spec = once_job("init");
    spec.new_hosts = true;
    spec.new_hosts_at_once = Some(2);
    s.apply(save(spec, 1));
    s.apply(save(once_job("plain"), 1));
    assert_eq!(states(&s, "init"), [(1, Pending, false)]);
    for n in [5, 3, 4, 2] {
        s.apply(register(n, 10 + i64::from(n)));
    }
    // Two late hosts start (5 and 3 came first); the host selected at the save is not counted.
    assert_eq!(
        states(&s, "init"),
        [
            (1, Pending, false),
            (2, Waiting, true),
            (3, Pending, true),
            (4, Waiting, true),
            (5, Pending, true)
        ]
    );
    let view = s.store.desired_view().unwrap();
    let mut pending: Vec<_> = view.pending.iter().filter(|p| p.1 == "init").collect();
    pending.sort();
    assert_eq!(
        pending.len(),
        3,
        "waiting hosts are not given the job: {pending:?}"
    );
    assert_eq!(states(&s, "plain"), [(1, Pending, false)]);

    // Registering again keeps a host's place and state; a waiting host's history is empty.
    let r = s.apply(register(4, 30));
    let CommandResult::NodeRegistered { once_history, .. } = r else {
        panic!("{r:?}")
    };
    assert!(once_history.is_empty(), "{once_history:?}");
    finish(&mut s, 1, "init", RunStatus::Ok, 31);
    assert_eq!(
        states(&s, "init")[3],
        (4, Waiting, true),
        "the save's hosts hold no place"
    );

    // A late host that settles (ok or failed) lets the next one start: 4 came before 2.
    finish(&mut s, 5, "init", RunStatus::Failed, 32);
    assert_eq!(
        states(&s, "init"),
        [
            (1, Done, false),
            (2, Waiting, true),
            (3, Pending, true),
            (4, Pending, true),
            (5, Failed, true)
        ]
    );
    // A forgotten late host frees its place.
    s.apply(Command::ForgetNode {
        node_id: node_id(3),
        at: at(33),
        actor: "admin".into(),
    });
    assert_eq!(states(&s, "init")[1], (2, Pending, true));
    // A done host that registers again gets nothing new and knows it ran the revision.
    finish(&mut s, 4, "init", RunStatus::Ok, 34);
    let r = s.apply(register(4, 35));
    let CommandResult::NodeRegistered { once_history, .. } = r else {
        panic!("{r:?}")
    };
    assert!(
        once_history
            .iter()
            .any(|o| o.job == "init" && o.revision == 1 && o.state == "done"),
        "{once_history:?}"
    );
    assert_eq!(s.store.once_targets("init", None).unwrap().len(), 5);
    assert_eq!(states(&s, "plain"), [(1, Pending, false)]);
}
