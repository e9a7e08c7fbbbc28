//! The job table: every job this agent currently holds, as the API and `/v1/status` see it.
//!
//! The scheduler is its only writer (it applies each new desired set and updates next fires);
//! the API reads it to find a job to invoke. Jobs that are disabled or do not select this host
//! stay in the table, marked, so that an invocation can say why it is refused.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use op_proto::JobSpec;

/// One job as held by this agent.
#[derive(Debug, Clone)]
pub struct JobEntry {
    pub revision: u64,
    pub spec: Arc<JobSpec>,
    /// False when the job's WhiteHosts/BlackHosts/Labels exclude this host.
    pub selected: bool,
    /// The next cron fire (planned time, before jitter).
    pub next_fire: Option<DateTime<Utc>>,
}

impl JobEntry {
    /// True when the scheduler runs it and the API may invoke it.
    pub fn active(&self) -> bool {
        self.spec.enabled && self.selected
    }
}

#[derive(Clone, Default)]
pub struct JobTable(Arc<RwLock<BTreeMap<String, JobEntry>>>);

impl JobTable {
    pub fn get(&self, name: &str) -> Option<JobEntry> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub fn list(&self) -> Vec<JobEntry> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn replace(&self, jobs: BTreeMap<String, JobEntry>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = jobs;
    }

    pub(crate) fn set_next_fire(&self, name: &str, next: Option<DateTime<Utc>>) {
        if let Some(e) = self
            .0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(name)
        {
            e.next_fire = next;
        }
    }
}
