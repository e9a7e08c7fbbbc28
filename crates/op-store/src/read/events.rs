//! Events and the incident state that derives them (issue 19).

use op_proto::events::Event;
use op_proto::incidents::IncidentState;

use crate::Store;
use crate::codec::from_json;
use crate::error::{Result, StoreError};

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

    /// A copy of the replicated incident state, as last applied.
    pub fn incident_state(&self) -> Result<IncidentState> {
        self.with_incidents(IncidentState::clone)
    }

    /// Runs `f` on the incident state as last applied (the leader reads which fires are due),
    /// without copying it. Applying waits while `f` runs: keep it short.
    pub fn with_incidents<T>(&self, f: impl FnOnce(&IncidentState) -> T) -> Result<T> {
        let _shared = self.swap.read().map_err(|_| StoreError::Poisoned)?;
        let mut cache = self.incidents.lock().map_err(|_| StoreError::Poisoned)?;
        let state = match &mut *cache {
            Some(state) => state,
            None => cache.insert(self.with_reader(|conn| {
                // The state and its fire rows of one moment.
                let tx = conn.unchecked_transaction()?;
                let state = crate::apply::events::load(&tx)?;
                tx.commit()?;
                Ok(state)
            })?),
        };
        Ok(f(state))
    }
}

impl Store {
    /// The newest kept events, newest first, at most `limit` (capped at [`MAX_EVENT_PAGE`]):
    /// only those of one of `kinds` (any kind when empty) and of `job` (any when `None`), with an
    /// id below `before` when given. The console's events page and a job's incidents read this.
    pub fn events_newest(
        &self,
        kinds: &[String],
        job: Option<&str>,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Event>> {
        let limit = limit.clamp(1, MAX_EVENT_PAGE);
        let kinds = kinds.to_vec();
        let job = job.map(str::to_string);
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        self.read(move |conn| {
            // At most a few kinds: one placeholder each, after the fixed ones.
            let kind_filter = if kinds.is_empty() {
                String::new()
            } else {
                let marks: Vec<String> = (0..kinds.len()).map(|i| format!("?{}", i + 4)).collect();
                format!("AND kind IN ({})", marks.join(", "))
            };
            let sql = format!(
                "SELECT record FROM events WHERE id < ?1 AND (?2 IS NULL OR job = ?2) {kind_filter}
                 ORDER BY id DESC LIMIT ?3"
            );
            let mut stmt = conn.prepare(&sql)?;
            let mut values: Vec<rusqlite::types::Value> = vec![
                before.into(),
                job.clone().map_or(rusqlite::types::Value::Null, Into::into),
                i64::from(limit).into(),
            ];
            values.extend(kinds.iter().cloned().map(rusqlite::types::Value::from));
            let rows = stmt.query_map(rusqlite::params_from_iter(values), |r| {
                r.get::<_, String>(0)
            })?;
            let mut out = Vec::new();
            for text in rows {
                out.push(from_json("event", &text?)?);
            }
            Ok(out)
        })
    }
}
