//! Secret commands (issue 24): only sealed values are stored, a secret in use cannot be removed,
//! and a rotation must name exactly the stored secrets.

use op_store::{Command, CommandResult, SealedSecret};

use crate::common::*;

fn sealed(key: &str) -> SealedSecret {
    SealedSecret {
        key_id: key.into(),
        nonce: "00".repeat(24),
        ciphertext: "ab".repeat(20),
    }
}

fn set(name: &str, key: &str, secs: i64) -> Command {
    Command::SetSecret {
        name: name.into(),
        sealed: sealed(key),
        at: at(secs),
        actor: "admin".into(),
    }
}

fn rejected(r: &CommandResult) -> String {
    match r {
        CommandResult::Rejected { rejection } => rejection.message.clone(),
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn secrets_are_stored_sealed_listed_by_name_and_guarded() {
    let mut s = TestStore::new();
    let r = s.apply(set("db/pw", "k1", 0));
    assert!(
        matches!(r, CommandResult::Secret { created: true, .. }),
        "{r:?}"
    );
    let r = s.apply(set("db/pw", "k1", 1));
    assert!(
        matches!(r, CommandResult::Secret { created: false, .. }),
        "{r:?}"
    );
    // Bad names and malformed sealed values are refused, nothing stored.
    assert!(rejected(&s.apply(set("../x", "k1", 2))).contains("../x"));
    let mut bad = set("api/key", "k1", 2);
    if let Command::SetSecret { sealed, .. } = &mut bad {
        sealed.ciphertext = "not hex".into();
    }
    assert!(rejected(&s.apply(bad)).contains("malformed"));
    let list = s.store.secrets().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (
            list[0].name.as_str(),
            list[0].updated_at,
            list[0].updated_by.as_str()
        ),
        ("db/pw", at(1), "admin")
    );
    assert_eq!(s.store.sealed_secrets().unwrap()[0].1, sealed("k1"));

    // In use by a job: refused, naming the job; free again once the job is gone.
    let mut spec = cron_job("backup");
    spec.env.insert("PW".into(), "secret:db/pw".into());
    s.apply(save(spec, 3));
    let remove = || Command::RemoveSecret {
        name: "db/pw".into(),
        at: at(4),
        actor: "admin".into(),
    };
    assert!(rejected(&s.apply(remove())).contains("backup"));
    s.apply(Command::DeleteJob {
        name: "backup".into(),
        at: at(5),
        actor: "admin".into(),
    });

    // A rotation names exactly the stored secrets.
    s.apply(set("api/key", "k1", 6));
    let rekey = |names: &[&str], nonce: &str| Command::RekeySecrets {
        sealed: names
            .iter()
            .map(|n| (n.to_string(), sealed("k2")))
            .collect(),
        at: at(7),
        actor: "op-manager".into(),
        replaces: names
            .iter()
            .map(|n| (n.to_string(), nonce.to_string()))
            .collect(),
    };
    let read_nonce = "00".repeat(24);
    assert!(rejected(&s.apply(rekey(&["db/pw"], &read_nonce))).contains("rotate again"));
    // A secret set again after the rotation read it (another nonce) refuses the rotation.
    assert!(rejected(&s.apply(rekey(&["api/key", "db/pw"], "11"))).contains("rotate again"));
    assert_eq!(
        s.apply(rekey(&["api/key", "db/pw"], &read_nonce)),
        CommandResult::Done
    );
    assert!(
        s.store
            .sealed_secrets()
            .unwrap()
            .iter()
            .all(|(_, v)| v.key_id == "k2")
    );
    assert_eq!(s.apply(remove()), CommandResult::Done);
    assert!(rejected(&s.apply(remove())).contains("no secret"));
    let audit: Vec<String> = s
        .store
        .audit(None, 100)
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect();
    for action in [
        "secret.add",
        "secret.update",
        "secret.rekey",
        "secret.remove",
    ] {
        assert!(audit.iter().any(|a| a == action), "{audit:?}");
    }
}
