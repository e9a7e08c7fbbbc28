//! Events (issue 19): the applied commands' [`Input`]s go through the one replicated
//! [`IncidentState`], and the events it returns are appended to the `events` table in the same
//! transaction.
//!
//! Invariant: events are derived here, in apply, from committed inputs only. The time of every
//! input comes from its command, ids from the counter inside the state, so every member derives
//! the same events with the same ids. The leader only decides *when* to close a fire or flush a
//! batch, and commits that decision as a command (`CloseFires`, `FlushEvents`).
//!
//! The store keeps the state as it was last committed in memory ([`crate::Store`]'s cache),
//! so a batch neither decodes nor re-encodes it: it writes the serde form only when something
//! besides the open fires changed, and of the fires only the rows the batch changed
//! ([`FireChanges`]). A batch that fails leaves the cache empty, and the next use loads the
//! state from the database again; so does installing a snapshot. A refused command feeds nothing
//! (its inputs are dropped with its savepoint).

use std::collections::{BTreeMap, HashSet};

use chrono::Duration;
use op_proto::events::Event;
use op_proto::incidents::{
    CloseFire, FireChanges, FireKey, FireResult, Flush, IncidentState, Input,
};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Changes, Outcome};
use crate::codec::{from_json, ms, to_json};
use crate::command::{CommandResult, FireToClose};
use crate::error::Result;

/// Most events kept: older ones are dropped as new ones arrive.
pub const MAX_EVENTS: i64 = 10_000;
/// Events older than this (behind the newest event's time) are dropped.
pub const MAX_EVENT_AGE: Duration = Duration::days(30);

/// The incident state of one applied batch: the cached one, or loaded on first use.
pub(crate) struct Incidents {
    state: Option<IncidentState>,
}

impl Incidents {
    /// Starts a batch with the cached state, if there is one.
    pub(crate) fn new(cached: Option<IncidentState>) -> Incidents {
        Incidents { state: cached }
    }

    /// Feeds the inputs of one applied command; appends the events they produce.
    pub(crate) fn feed(
        &mut self,
        conn: &Connection,
        inputs: Vec<Input>,
        ch: &mut Changes,
    ) -> Result<()> {
        if inputs.is_empty() {
            return Ok(());
        }
        let state = match &mut self.state {
            Some(s) => s,
            None => self.state.insert(load(conn)?),
        };
        for input in &inputs {
            let events = state.apply(input);
            append(conn, &events)?;
            ch.events += events.len() as u64;
        }
        Ok(())
    }

    /// Writes what the batch changed; returns the state to cache once the batch commits.
    pub(crate) fn finish(self, conn: &Connection) -> Result<Option<IncidentState>> {
        let Some(mut state) = self.state else {
            return Ok(None);
        };
        let changes = state.take_changes();
        if !changes.is_empty() {
            write(conn, &state, &changes)?;
        }
        Ok(Some(state))
    }
}

/// Writes `changes` of `state`: the serde form if it changed, then the fire rows.
fn write(conn: &Connection, state: &IncidentState, changes: &FireChanges) -> Result<()> {
    if changes.core {
        conn.execute(
            "INSERT INTO incidents(id, state) VALUES (1, ?1)
             ON CONFLICT(id) DO UPDATE SET state = excluded.state",
            [to_json(state)],
        )?;
    }
    let mut del_fire = conn.prepare_cached("DELETE FROM incident_fires WHERE id = ?1")?;
    let mut del_results =
        conn.prepare_cached("DELETE FROM incident_fire_results WHERE fire = ?1")?;
    for row in &changes.closed {
        del_fire.execute([*row as i64])?;
        del_results.execute([*row as i64])?;
    }
    let mut put_fire = conn.prepare_cached(
        "INSERT OR REPLACE INTO incident_fires(id, key, first_result) VALUES (?1, ?2, ?3)",
    )?;
    for row in &changes.opened {
        if let Some((key, first)) = state.fire_at(*row) {
            put_fire.execute(params![*row as i64, to_json(key), to_json(&first)])?;
        }
    }
    let mut put_result = conn.prepare_cached(
        "INSERT OR REPLACE INTO incident_fire_results(fire, host, result) VALUES (?1, ?2, ?3)",
    )?;
    let mut done: HashSet<(u64, &str)> = HashSet::new();
    for (row, host) in &changes.results {
        if !done.insert((*row, host)) {
            continue;
        }
        if let Some(result) = state.fire_result(*row, host) {
            put_result.execute(params![*row as i64, host, to_json(result)])?;
        }
    }
    Ok(())
}

/// The stored incident state (a new one when none was written yet), with its open fires. Call
/// it inside one transaction, so the state and its fires are of one moment.
pub(crate) fn load(conn: &Connection) -> Result<IncidentState> {
    let text: Option<String> = conn
        .query_row("SELECT state FROM incidents WHERE id = 1", [], |r| r.get(0))
        .optional()?;
    let mut state = match text {
        Some(t) => from_json("incident state", &t)?,
        None => IncidentState::default(),
    };
    let mut results: BTreeMap<i64, BTreeMap<String, FireResult>> = BTreeMap::new();
    for (fire, host, result) in
        triples(conn, "SELECT fire, host, result FROM incident_fire_results")?
    {
        results
            .entry(fire)
            .or_default()
            .insert(host, from_json("incident fire result", &result)?);
    }
    for (id, key, first) in triples(
        conn,
        "SELECT id, key, first_result FROM incident_fires ORDER BY id",
    )? {
        let key: FireKey = from_json("incident fire key", &key)?;
        let first = from_json("incident fire time", &first)?;
        let fire_results = results.remove(&id).unwrap_or_default();
        state.restore_fire(id as u64, key, first, fire_results);
    }
    Ok(state)
}

/// The rows of `sql`: an integer and two texts each.
fn triples(conn: &Connection, sql: &str) -> Result<Vec<(i64, String, String)>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn append(conn: &Connection, events: &[Event]) -> Result<()> {
    let Some(last) = events.last() else {
        return Ok(());
    };
    let mut insert = conn.prepare_cached(
        "INSERT OR REPLACE INTO events(id, time, kind, job, record) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for e in events {
        insert.execute(params![
            e.id as i64,
            ms(e.time),
            e.kind.as_str(),
            e.job,
            to_json(e)
        ])?;
    }
    // Bounded retention, measured against the newest event (never a member's clock).
    conn.execute(
        "DELETE FROM events WHERE id <= ?1 OR time < ?2",
        params![last.id as i64 - MAX_EVENTS, ms(last.time - MAX_EVENT_AGE)],
    )?;
    Ok(())
}

/// `CloseFires`: each fire becomes one `CloseFire` input.
pub(super) fn close_fires(
    at: chrono::DateTime<chrono::Utc>,
    fires: &[FireToClose],
    ch: &mut Changes,
) -> Outcome {
    ch.inputs.extend(fires.iter().map(|f| {
        Input::CloseFire(CloseFire {
            time: at,
            fire: f.fire.clone(),
            selected: f.selected.clone(),
        })
    }));
    Ok(Ok(CommandResult::Done))
}

/// `FlushEvents`: the batched node and package changes become events.
pub(super) fn flush(at: chrono::DateTime<chrono::Utc>, ch: &mut Changes) -> Outcome {
    ch.inputs.push(Input::Flush(Flush { time: at }));
    Ok(Ok(CommandResult::Done))
}
