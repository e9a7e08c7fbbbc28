//! Secrets, by name: what `list` shows (never a value) and the sealed form the manager opens.

use op_proto::secret::SecretInfo;
use rusqlite::{Connection, OptionalExtension};

use crate::Store;
use crate::codec::from_ms;
use crate::command::SealedSecret;
use crate::error::Result;

fn info_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SecretInfo> {
    Ok(SecretInfo {
        name: r.get(0)?,
        updated_at: from_ms(r.get(1)?),
        updated_by: r.get(2)?,
    })
}

pub(crate) fn info(conn: &Connection, name: &str) -> Result<Option<SecretInfo>> {
    Ok(conn
        .prepare_cached("SELECT name, updated_at, updated_by FROM secrets WHERE name = ?1")?
        .query_row([name], info_row)
        .optional()?)
}

pub(crate) fn list(conn: &Connection) -> Result<Vec<SecretInfo>> {
    let mut stmt =
        conn.prepare_cached("SELECT name, updated_at, updated_by FROM secrets ORDER BY name")?;
    let rows = stmt.query_map([], info_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(crate) fn sealed(conn: &Connection) -> Result<Vec<(String, SealedSecret)>> {
    let mut stmt =
        conn.prepare_cached("SELECT name, key_id, nonce, ciphertext FROM secrets ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            SealedSecret {
                key_id: r.get(1)?,
                nonce: r.get(2)?,
                ciphertext: r.get(3)?,
            },
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

impl Store {
    /// Every secret's name and last change, by name.
    pub fn secrets(&self) -> Result<Vec<SecretInfo>> {
        self.read(list)
    }

    /// One secret's name and last change.
    pub fn secret_info(&self, name: &str) -> Result<Option<SecretInfo>> {
        self.read(|conn| info(conn, name))
    }

    /// The sealed values of every secret, by name (for the manager to open).
    pub fn sealed_secrets(&self) -> Result<Vec<(String, SealedSecret)>> {
        self.read(sealed)
    }
}
