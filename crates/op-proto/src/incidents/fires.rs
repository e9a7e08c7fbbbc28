//! The open fires of an [`IncidentState`](super::IncidentState), and the changes a store needs
//! to keep them as rows.
//!
//! A busy fleet has many open fires (a fire per API-invoked run, a fire a second of a busy cron
//! job) and a large one has many results per fire (50,000 hosts of one cron fire). So the fires
//! are not part of the state's serde form: the store keeps each fire and each host's result as a
//! row and writes only what a batch changed ([`FireChanges`]), instead of encoding the whole
//! state once per applied batch. In memory a fire is found by key in O(1) and the fires iterate
//! in the order they opened, as before.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use super::{FireKey, Labels, Outcome};

/// A host's latest counted outcome in a fire, and its labels.
pub type FireResult = (Outcome, Labels);

/// A fire whose results are still being collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OpenFire {
    pub(super) key: FireKey,
    pub(super) first_result: DateTime<Utc>,
    /// Host name → its latest counted outcome and labels.
    pub(super) results: BTreeMap<String, FireResult>,
}

/// What changed since the store last took the changes ([`super::IncidentState::take_changes`]).
/// Fires are named by their row: a number the state gives each fire when it opens (a fire that
/// opens again after it closed gets a new one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FireChanges {
    /// Something besides the fires changed: the serde form must be written again.
    pub core: bool,
    /// Fires that closed (or were dropped): delete their rows and results.
    pub closed: Vec<u64>,
    /// Fires that opened: write their row if they are still open.
    pub opened: Vec<u64>,
    /// Results set: write each whose fire is still open.
    pub results: Vec<(u64, String)>,
}

impl FireChanges {
    pub fn is_empty(&self) -> bool {
        !self.core && self.closed.is_empty() && self.opened.is_empty() && self.results.is_empty()
    }
}

/// The open fires, in the order they opened, found by key.
#[derive(Debug, Clone, Default)]
pub(super) struct Fires {
    by_row: BTreeMap<u64, OpenFire>,
    index: HashMap<FireKey, u64>,
    next_row: u64,
    pub(super) changes: FireChanges,
}

/// The same fires in the same order: rows and the pending changes are the store's business.
impl PartialEq for Fires {
    fn eq(&self, other: &Fires) -> bool {
        self.by_row.values().eq(other.by_row.values())
    }
}

impl Eq for Fires {}

impl Fires {
    pub(super) fn iter(&self) -> impl DoubleEndedIterator<Item = &OpenFire> {
        self.by_row.values()
    }

    pub(super) fn get(&self, key: &FireKey) -> Option<&OpenFire> {
        self.index.get(key).and_then(|row| self.by_row.get(row))
    }

    /// Records `result` for `host` in the fire `key`, opening the fire (first result at `time`)
    /// if it is not open.
    pub(super) fn record(
        &mut self,
        key: &FireKey,
        time: DateTime<Utc>,
        host: &str,
        result: FireResult,
    ) {
        let row = match self.index.get(key) {
            Some(row) => *row,
            None => {
                let row = self.next_row;
                self.next_row += 1;
                self.index.insert(key.clone(), row);
                self.by_row.insert(
                    row,
                    OpenFire {
                        key: key.clone(),
                        first_result: time,
                        results: BTreeMap::new(),
                    },
                );
                self.changes.opened.push(row);
                row
            }
        };
        let fire = self.by_row.get_mut(&row).expect("indexed fires exist");
        fire.results.insert(host.to_string(), result);
        self.changes.results.push((row, host.to_string()));
    }

    /// Takes the fire `key` out.
    pub(super) fn remove(&mut self, key: &FireKey) -> Option<OpenFire> {
        let row = self.index.remove(key)?;
        self.changes.closed.push(row);
        self.by_row.remove(&row)
    }

    /// Drops every fire of `job`.
    pub(super) fn remove_job(&mut self, job: &str) {
        let rows: Vec<u64> = self
            .by_row
            .iter()
            .filter(|(_, f)| f.key.job() == job)
            .map(|(row, _)| *row)
            .collect();
        for row in rows {
            if let Some(fire) = self.by_row.remove(&row) {
                self.index.remove(&fire.key);
                self.changes.closed.push(row);
            }
        }
    }

    pub(super) fn row(&self, row: u64) -> Option<&OpenFire> {
        self.by_row.get(&row)
    }

    /// Puts back a fire the store kept (no change is recorded).
    pub(super) fn restore(&mut self, row: u64, fire: OpenFire) {
        if let Some(old) = self.by_row.remove(&row) {
            self.index.remove(&old.key);
        }
        if let Some(other) = self.index.remove(&fire.key) {
            self.by_row.remove(&other);
        }
        self.index.insert(fire.key.clone(), row);
        self.by_row.insert(row, fire);
        self.next_row = self.next_row.max(row + 1);
    }
}
