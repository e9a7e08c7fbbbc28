//! Which jobs a node was ever given, so run ingestion can refuse a run of a job the node was
//! never selected for (a node credential must not speak for other hosts' jobs) while still
//! accepting a run that waited in an outbox while the job's selection changed.
//!
//! A node was given a job when, at some point, the job's selector matched the node's identity
//! (for a once-job: when the node was one of its targets). The current selector and identity
//! answer for the present; `node_selections` keeps the past: just before a job's selector
//! changes (or the job is deleted, or becomes a once-job) the nodes its old selector matched are
//! written there, and just before a node's identity changes the jobs its old identity matched.
//! A run accepted through the current selector is written there too, so later batches of the
//! same (node, job) cost one indexed lookup rather than parsing the job.

use std::collections::HashMap;

use op_proto::hosts::HostIdentity;
use op_proto::{JobSpec, NodeStatus};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use crate::error::Result;
use crate::read;

/// Remembers every live node the selector of `spec` (about to change) matches.
pub(super) fn remember_job(conn: &Connection, spec: &JobSpec) -> Result<()> {
    if spec.once_job {
        // Once-jobs are given through their targets, which are kept per revision.
        return Ok(());
    }
    let selector = spec.selector();
    let mut insert =
        conn.prepare_cached("INSERT OR IGNORE INTO node_selections(node_id, job) VALUES (?1, ?2)")?;
    for node in read::nodes::all(conn)? {
        if node.status != NodeStatus::Left && selector.matches(&node.identity()) {
            insert.execute(params![node.node_id.to_string(), spec.name])?;
        }
    }
    Ok(())
}

/// Remembers every live job the identity of `node_id` (about to change) is selected by.
pub(super) fn remember_node(
    conn: &Connection,
    node_id: Uuid,
    identity: &HostIdentity,
) -> Result<()> {
    let mut insert =
        conn.prepare_cached("INSERT OR IGNORE INTO node_selections(node_id, job) VALUES (?1, ?2)")?;
    for job in read::jobs::live(conn)? {
        if !job.spec.once_job && job.spec.selector().matches(identity) {
            insert.execute(params![node_id.to_string(), job.spec.name])?;
        }
    }
    Ok(())
}

/// Answers "was this node ever given this job?" for the runs of one batch.
pub(super) struct Given<'a> {
    node_id: Uuid,
    identity: HostIdentity,
    known: HashMap<String, bool>,
    conn: &'a Connection,
}

impl<'a> Given<'a> {
    pub(super) fn new(conn: &'a Connection, node_id: Uuid, identity: HostIdentity) -> Self {
        Given {
            node_id,
            identity,
            known: HashMap::new(),
            conn,
        }
    }

    pub(super) fn job(&mut self, job: &str) -> Result<bool> {
        if let Some(&given) = self.known.get(job) {
            return Ok(given);
        }
        let given = self.look_up(job)?;
        self.known.insert(job.to_string(), given);
        Ok(given)
    }

    fn look_up(&self, job: &str) -> Result<bool> {
        let node = self.node_id.to_string();
        let remembered = self
            .conn
            .prepare_cached("SELECT 1 FROM node_selections WHERE node_id = ?1 AND job = ?2")?
            .query_row(params![node, job], |_| Ok(()))
            .optional()?
            .is_some();
        let targeted = remembered
            || self
                .conn
                .prepare_cached(
                    "SELECT 1 FROM once_targets WHERE job = ?1 AND node_id = ?2 LIMIT 1",
                )?
                .query_row(params![job, node], |_| Ok(()))
                .optional()?
                .is_some();
        if targeted {
            return Ok(true);
        }
        let selected_now = match read::jobs::load(self.conn, job)? {
            Some((record, false)) => {
                !record.spec.once_job && record.spec.selector().matches(&self.identity)
            }
            _ => false,
        };
        if selected_now {
            self.conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO node_selections(node_id, job) VALUES (?1, ?2)",
                )?
                .execute(params![node, job])?;
        }
        Ok(selected_now)
    }
}
