//! Notification rules, by name.

use op_proto::events::NotifyRuleInfo;
use rusqlite::{Connection, OptionalExtension};

use crate::Store;
use crate::codec::{from_json, from_ms};
use crate::error::Result;

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, i64, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
}

fn decode((rule, at, by): (String, i64, String)) -> Result<NotifyRuleInfo> {
    Ok(NotifyRuleInfo {
        rule: from_json("notify rule", &rule)?,
        updated_at: from_ms(at),
        updated_by: by,
    })
}

pub(crate) fn rule(conn: &Connection, name: &str) -> Result<Option<NotifyRuleInfo>> {
    conn.prepare_cached("SELECT rule, updated_at, updated_by FROM notify_rules WHERE name = ?1")?
        .query_row([name], row)
        .optional()?
        .map(decode)
        .transpose()
}

impl Store {
    /// Every notification rule, by name.
    pub fn notify_rules(&self) -> Result<Vec<NotifyRuleInfo>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT rule, updated_at, updated_by FROM notify_rules ORDER BY name",
            )?;
            let rows = stmt.query_map([], row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .map(decode)
                .collect()
        })
    }

    /// One notification rule by name.
    pub fn notify_rule(&self, name: &str) -> Result<Option<NotifyRuleInfo>> {
        self.read(|conn| rule(conn, name))
    }
}
