//! Notification rules, by name.

use op_proto::events::{NotifyDelivery, NotifyRuleInfo};
use rusqlite::{Connection, OptionalExtension};

use crate::Store;
use crate::codec::{from_json, from_ms};
use crate::error::Result;

/// The columns every query below selects, the delivery row joined (absent for a rule saved
/// before it existed).
const COLUMNS: &str = "SELECT r.rule, r.updated_at, r.updated_by, d.acknowledged, d.last_success,
     d.failures, d.last_error, d.last_failure
     FROM notify_rules r LEFT JOIN notify_delivery d ON d.rule = r.name";

type Row = (String, i64, String, NotifyDelivery);

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let delivery = NotifyDelivery {
        acknowledged: r.get::<_, Option<i64>>(3)?.unwrap_or(0).max(0) as u64,
        last_success: r.get::<_, Option<i64>>(4)?.map(from_ms),
        consecutive_failures: r.get::<_, Option<u32>>(5)?.unwrap_or(0),
        last_error: r.get(6)?,
        last_failure: r.get::<_, Option<i64>>(7)?.map(from_ms),
    };
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, delivery))
}

fn decode((rule, at, by, delivery): Row) -> Result<NotifyRuleInfo> {
    Ok(NotifyRuleInfo {
        rule: from_json("notify rule", &rule)?,
        updated_at: from_ms(at),
        updated_by: by,
        delivery,
    })
}

pub(crate) fn rule(conn: &Connection, name: &str) -> Result<Option<NotifyRuleInfo>> {
    conn.prepare_cached(&format!("{COLUMNS} WHERE r.name = ?1"))?
        .query_row([name], row)
        .optional()?
        .map(decode)
        .transpose()
}

impl Store {
    /// Every notification rule, by name.
    pub fn notify_rules(&self) -> Result<Vec<NotifyRuleInfo>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!("{COLUMNS} ORDER BY r.name"))?;
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
