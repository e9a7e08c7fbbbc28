//! Pauses and maintenance windows (issue 23).

use op_proto::holds::{Pause, Window};
use rusqlite::Connection;

use crate::Store;
use crate::codec::from_json;
use crate::error::Result;

pub(crate) fn pauses(conn: &Connection) -> Result<Vec<Pause>> {
    let mut stmt = conn.prepare_cached("SELECT info FROM pauses ORDER BY scope")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for text in rows {
        out.push(from_json("pause", &text?)?);
    }
    Ok(out)
}

pub(crate) fn windows(conn: &Connection) -> Result<Vec<Window>> {
    let mut stmt = conn.prepare_cached("SELECT info FROM windows ORDER BY name")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for text in rows {
        out.push(from_json("window", &text?)?);
    }
    Ok(out)
}

impl Store {
    /// Every pause, expired or not, by scope.
    pub fn pauses(&self) -> Result<Vec<Pause>> {
        self.read(pauses)
    }

    /// Every maintenance window, by name.
    pub fn windows(&self) -> Result<Vec<Window>> {
        self.read(windows)
    }
}
