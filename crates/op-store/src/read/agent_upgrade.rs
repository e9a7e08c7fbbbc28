//! Agent releases and pins (issue 22), kept in `meta`.

use std::collections::HashMap;

use op_proto::agent_upgrade::{AgentPin, AgentRelease};
use rusqlite::Connection;

use crate::Store;
use crate::apply::agent_upgrade::{PIN_PREFIX, RELEASE_PREFIX};
use crate::codec::from_json;
use crate::error::Result;

fn with_prefix(conn: &Connection, prefix: &str) -> Result<Vec<(String, String)>> {
    // Every key with the prefix: the range [prefix, prefix + U+10FFFF).
    let end = format!("{prefix}\u{10FFFF}");
    let mut stmt = conn
        .prepare_cached("SELECT key, value FROM meta WHERE key >= ?1 AND key < ?2 ORDER BY key")?;
    let rows = stmt.query_map([prefix, end.as_str()], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

impl Store {
    /// Every agent release the manager knows, by the sha256 of its content.
    pub fn agent_releases(&self) -> Result<HashMap<String, AgentRelease>> {
        self.read(|conn| {
            with_prefix(conn, RELEASE_PREFIX)?
                .into_iter()
                .map(|(k, v)| {
                    Ok((
                        k[RELEASE_PREFIX.len()..].to_string(),
                        from_json("agent release", &v)?,
                    ))
                })
                .collect()
        })
    }

    /// The pins in force, by target.
    pub fn agent_pins(&self) -> Result<Vec<AgentPin>> {
        self.read(|conn| {
            with_prefix(conn, PIN_PREFIX)?
                .into_iter()
                .map(|(_, v)| from_json("agent pin", &v))
                .collect()
        })
    }
}
