//! Events and the incident state that derives them (issue 19).

use op_proto::events::Event;
use op_proto::incidents::IncidentState;

use crate::Store;
use crate::codec::from_json;
use crate::error::Result;

/// Most events one read returns.
pub const MAX_EVENT_PAGE: u32 = 1_000;

impl Store {
    /// Kept events with an id greater than `after`, oldest first, at most `limit`.
    pub fn events_after(&self, after: u64, limit: u32) -> Result<Vec<Event>> {
        let limit = limit.clamp(1, MAX_EVENT_PAGE);
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT record FROM events WHERE id > ?1 ORDER BY id LIMIT ?2")?;
            let rows = stmt.query_map(
                rusqlite::params![i64::try_from(after).unwrap_or(i64::MAX), limit],
                |r| r.get::<_, String>(0),
            )?;
            let mut out = Vec::new();
            for text in rows {
                out.push(from_json("event", &text?)?);
            }
            Ok(out)
        })
    }

    /// The replicated incident state, as last applied (the leader reads which fires are due).
    pub fn incident_state(&self) -> Result<IncidentState> {
        self.read(crate::apply::events::load)
    }
}
