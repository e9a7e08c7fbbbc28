//! Events (issue 19): the applied commands' [`Input`]s go through the one replicated
//! [`IncidentState`], and the events it returns are appended to the `events` table in the same
//! transaction.
//!
//! Invariant: events are derived here, in apply, from committed inputs only. The time of every
//! input comes from its command, ids from the counter inside the state, so every member derives
//! the same events with the same ids. The leader only decides *when* to close a fire or flush a
//! batch, and commits that decision as a command (`CloseFires`, `FlushEvents`).
//!
//! The state is loaded once per batch (when a command of it has inputs) and written back at the
//! end of the batch; a refused command feeds nothing (its inputs are dropped with its savepoint).

use chrono::Duration;
use op_proto::events::Event;
use op_proto::incidents::{CloseFire, Flush, IncidentState, Input};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Changes, Outcome};
use crate::codec::{from_json, ms, to_json};
use crate::command::{CommandResult, FireToClose};
use crate::error::Result;

/// Most events kept: older ones are dropped as new ones arrive.
pub const MAX_EVENTS: i64 = 10_000;
/// Events older than this (behind the newest event's time) are dropped.
pub const MAX_EVENT_AGE: Duration = Duration::days(30);

/// The incident state of one applied batch, loaded on first use.
#[derive(Default)]
pub(crate) struct Incidents {
    state: Option<IncidentState>,
}

impl Incidents {
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

    /// Writes the state back if a command of the batch used it.
    pub(crate) fn finish(self, conn: &Connection) -> Result<()> {
        let Some(state) = self.state else {
            return Ok(());
        };
        conn.execute(
            "INSERT INTO incidents(id, state) VALUES (1, ?1)
             ON CONFLICT(id) DO UPDATE SET state = excluded.state",
            [to_json(&state)],
        )?;
        Ok(())
    }
}

/// The stored incident state (a new one when none was written yet).
pub(crate) fn load(conn: &Connection) -> Result<IncidentState> {
    let text: Option<String> = conn
        .query_row("SELECT state FROM incidents WHERE id = 1", [], |r| r.get(0))
        .optional()?;
    match text {
        Some(t) => from_json("incident state", &t),
        None => Ok(IncidentState::default()),
    }
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
