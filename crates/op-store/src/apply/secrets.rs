//! Secret commands (issue 24). A secret is stored sealed (ciphertext, nonce, key id), exactly as
//! the proposing manager sealed it: nothing here ever sees a value. Changing or removing a secret
//! changes the desired state of the nodes whose jobs use it, so every node syncs again (secrets
//! change rarely; finding the few nodes concerned is not worth a second code path).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use op_proto::secret::{SecretInfo, secret_refs, validate_secret_name};
use rusqlite::{Connection, params};

use super::{Changes, Outcome, audit, bump_desired_all};
use crate::codec::ms;
use crate::command::{CommandResult, Rejection, SealedSecret};
use crate::read;

fn check_sealed(name: &str, sealed: &SealedSecret) -> Result<(), Rejection> {
    if let Err(e) = validate_secret_name(name) {
        return Err(Rejection::invalid(format!("secret name {name:?} {e}")));
    }
    let hex_ok = |s: &str| {
        !s.is_empty() && s.len().is_multiple_of(2) && s.bytes().all(|b| b.is_ascii_hexdigit())
    };
    if !hex_ok(&sealed.nonce) || !hex_ok(&sealed.ciphertext) || sealed.key_id.is_empty() {
        return Err(Rejection::invalid(format!(
            "secret {name:?}: the sealed value is malformed"
        )));
    }
    Ok(())
}

fn store(conn: &Connection, name: &str, sealed: &SealedSecret) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE secrets SET key_id = ?2, nonce = ?3, ciphertext = ?4 WHERE name = ?1",
        params![name, sealed.key_id, sealed.nonce, sealed.ciphertext],
    )
}

pub(super) fn set(
    conn: &Connection,
    index: u64,
    name: &str,
    sealed: &SealedSecret,
    at: DateTime<Utc>,
    actor: &str,
    ch: &mut Changes,
) -> Outcome {
    if let Err(r) = check_sealed(name, sealed) {
        return Ok(Err(r));
    }
    let created = read::secrets::info(conn, name)?.is_none();
    conn.execute(
        "INSERT INTO secrets(name, key_id, nonce, ciphertext, updated_at, updated_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(name) DO UPDATE SET key_id = excluded.key_id, nonce = excluded.nonce,
         ciphertext = excluded.ciphertext, updated_at = excluded.updated_at,
         updated_by = excluded.updated_by",
        params![
            name,
            sealed.key_id,
            sealed.nonce,
            sealed.ciphertext,
            ms(at),
            actor
        ],
    )?;
    audit(
        conn,
        at,
        actor,
        if created {
            "secret.add"
        } else {
            "secret.update"
        },
        name,
        "",
    )?;
    bump_desired_all(conn, index, ch)?;
    Ok(Ok(CommandResult::Secret {
        info: SecretInfo {
            name: name.to_string(),
            updated_at: at,
            updated_by: actor.to_string(),
        },
        created,
    }))
}

pub(super) fn remove(
    conn: &Connection,
    index: u64,
    name: &str,
    at: DateTime<Utc>,
    actor: &str,
    ch: &mut Changes,
) -> Outcome {
    if read::secrets::info(conn, name)?.is_none() {
        return Ok(Err(Rejection::not_found(format!(
            "no secret named {name:?} (see agentcli secret list)"
        ))));
    }
    let users: Vec<String> = read::jobs::live(conn)?
        .into_iter()
        .filter(|j| secret_refs(&j.spec.env).contains(name))
        .map(|j| j.spec.name)
        .collect();
    if !users.is_empty() {
        return Ok(Err(Rejection::conflict(format!(
            "secret {name:?} is used by job(s) {}; change or delete them first",
            users.join(", ")
        ))));
    }
    conn.execute("DELETE FROM secrets WHERE name = ?1", [name])?;
    audit(conn, at, actor, "secret.remove", name, "")?;
    bump_desired_all(conn, index, ch)?;
    Ok(Ok(CommandResult::Done))
}

pub(super) fn rekey(
    conn: &Connection,
    sealed: &BTreeMap<String, SealedSecret>,
    replaces: &BTreeMap<String, String>,
    at: DateTime<Utc>,
    actor: &str,
) -> Outcome {
    let stored = read::secrets::sealed(conn)?;
    let names: Vec<&String> = stored.iter().map(|(n, _)| n).collect();
    let named: Vec<&String> = sealed.keys().collect();
    let changed = !replaces.is_empty()
        && stored
            .iter()
            .any(|(n, s)| replaces.get(n).is_none_or(|nonce| *nonce != s.nonce));
    if names != named || changed {
        return Ok(Err(Rejection::conflict(
            "the secrets changed while the key was being rotated; rotate again",
        )));
    }
    for (name, s) in sealed {
        if let Err(r) = check_sealed(name, s) {
            return Ok(Err(r));
        }
        store(conn, name, s)?;
    }
    let key_id = sealed.values().next().map_or("", |s| s.key_id.as_str());
    audit(
        conn,
        at,
        actor,
        "secret.rekey",
        "",
        &format!("{} secret(s) now under key {key_id}", sealed.len()),
    )?;
    Ok(Ok(CommandResult::Done))
}
