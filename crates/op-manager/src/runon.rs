//! The leader's firer for `RunOn` jobs (issue 23): jobs that run each fire on one (or N) of the
//! hosts they select, not on all of them.
//!
//! Agents do not fire such a job on their own cron (their scheduler skips it). Here, on the raft
//! leader only, every `every` (a few hundred ms): per job, the fires after a cursor that are due
//! (`op_proto::expect::expected_fires`), and for each one invocation on the hosts
//! `op_proto::runon::pick` chooses among the selected Ready nodes. The invocation is the ordinary
//! fan-out machinery (`CreateInvocation`, directives on the sync channel, the driver's rollout and
//! acknowledgement timeout), marked with the fire (`NewInvocation::fire`), so its runs are `cron`
//! runs carrying `planned_at` = the fire and the fire judge counts them per fire.
//!
//! **Never twice.** The invocation id is a hash of (job, revision, fire, attempt), and the store
//! refuses an invocation id it holds: a new leader (whose cursor starts `Grace` before now) tries
//! the same ids again and is refused for the fires the old leader started. A fire whose time
//! passed during an election is started late, once, if still within the job's `Grace`
//! (`expect::default_grace` when unset); after that it is not started, and the fire judge reports
//! it missed: never both.
//!
//! **Failover.** A picked host that does not acknowledge its directive within the invocation's
//! acknowledgement window (`--directive-ack-timeout`; the host ends `unresponsive`) is replaced by
//! another selected Ready host not tried for that fire (a new invocation, attempt k, linked with
//! `retry_of`); its own directive carries `start_by`, so a host that wakes up later does not run
//! the fire as well. With `RetryOnAnother`, a host whose run failed is retried once on another
//! host the same way. A host that went unresponsive is picked last for a minute.
//!
//! **Holds.** A drained host, and a host a pause or an open maintenance window covers for the
//! job at the fire, is never picked (issue 23), as its agent would not fire there. A fire every
//! selected host is held for is not started, and the fire judge (`missed`) leaves held hosts out
//! the same way.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use op_proto::api::JobRecord;
use op_proto::expect::{Fire, expected_fires};
use op_proto::invoke::{
    DEFAULT_DEADLINE_SECS, HostStatus, InvocationKind, InvocationOptions, MAX_WAIT_SECS,
};
use op_proto::runon::{Candidate, pick};
use op_proto::{NodeInfo, NodeStatus};
use op_store::{Command, NewInvocation, NewTarget, RejectionCode, Store};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clock::Clock;
use crate::error::DomainError;
use crate::heartbeat::HeartbeatBuffer;
use crate::state::{self, Writer};

/// Most invocations one fire may have: the first, replacements and retries.
pub const MAX_ATTEMPTS: u32 = 8;
/// Most fires of one job started in one pass (a long-stalled leader does not start hours).
const MAX_FIRES_PER_PASS: usize = 10;
/// How long a fire is followed for replacements and retries.
const FOLLOW_FOR: chrono::Duration = chrono::Duration::minutes(10);
/// How long a host that went unresponsive is picked only when nothing else is left.
const SUSPECT_FOR: chrono::Duration = chrono::Duration::seconds(60);
/// Who the firer's commands are audited as.
const ACTOR: &str = "op-manager (RunOn)";

/// What the firer uses.
pub struct RunOnFirer {
    pub store: Arc<Store>,
    /// Writes the invocations; also tells whether this manager leads.
    pub writer: Writer,
    /// The latest beats of the nodes connected here (their load).
    pub beats: Arc<HeartbeatBuffer>,
    pub clock: Arc<dyn Clock>,
    /// How often the leader looks for due fires.
    pub every: Duration,
    /// The acknowledgement window of a fire's directive (`--directive-ack-timeout`; 0 = none,
    /// and then a host is replaced only when it is not Ready at the fire).
    pub ack_timeout: Duration,
}

/// The invocation id of attempt `attempt` of the fire of `job` (at `revision`) at `fire`: the
/// same on every member and in every term, so a fire is created once whoever leads.
pub fn fire_id(job: &str, revision: u64, fire: DateTime<Utc>, attempt: u32) -> Uuid {
    let mut h = Sha256::new();
    h.update(b"op-agent RunOn fire\0");
    h.update(job.as_bytes());
    h.update([0]);
    h.update(revision.to_be_bytes());
    h.update(fire.timestamp_millis().to_be_bytes());
    h.update(attempt.to_be_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[derive(Debug, Clone)]
struct Cursor {
    revision: u64,
    /// Fires up to this instant are handled.
    at: DateTime<Utc>,
}

/// One fire being followed for replacements and retries.
#[derive(Debug, Clone)]
struct OpenFire {
    job: String,
    revision: u64,
    fire: DateTime<Utc>,
    /// Its invocations, attempt by attempt, and whether each is a retry of a failed run.
    invocations: Vec<(Uuid, bool)>,
    /// Every host it was sent to.
    tried: HashSet<Uuid>,
    /// Runs already replaced or retried.
    handled: HashSet<Uuid>,
}

/// The firer's memory between passes (the leader's only; a new term starts over).
#[derive(Debug, Default)]
pub struct Memory {
    cursors: HashMap<String, Cursor>,
    open: Vec<OpenFire>,
    suspects: HashMap<Uuid, DateTime<Utc>>,
    /// The pauses and maintenance windows in force, read with the nodes each pass: a host they
    /// hold (or a drained one) is never picked, as an agent would not fire there.
    holds: op_proto::holds::Holds,
}

/// Fires every `every` until `shutdown`, on the leader only.
pub async fn run(firer: RunOnFirer, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(firer.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut memory = Memory::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if !firer.writer.is_leader() {
            memory = Memory::default();
            continue;
        }
        if let Err(e) = firer.pass(&mut memory).await {
            tracing::warn!(error = %e, "firing RunOn jobs failed");
        }
    }
}

/// What creating one attempt came to.
enum Created {
    New(Vec<Uuid>),
    /// Another term created it before: the fire is started.
    Existed,
    /// No host to send it to.
    NoHost,
}

impl RunOnFirer {
    /// One pass: start the due fires, then replace or retry the hosts of the open ones.
    pub async fn pass(&self, memory: &mut Memory) -> Result<(), DomainError> {
        let now = self.clock.now();
        let jobs = state::read(&self.store, |s| s.jobs()).await?;
        let live: HashMap<&str, &JobRecord> = jobs
            .iter()
            .filter(|j| j.spec.enabled && j.spec.run_on.is_picked() && j.spec.schedule().is_some())
            .map(|j| (j.spec.name.as_str(), j))
            .collect();
        memory
            .cursors
            .retain(|name, _| live.contains_key(name.as_str()));
        memory.open.retain(|f| {
            live.get(f.job.as_str())
                .is_some_and(|j| j.revision == f.revision)
                && f.fire + FOLLOW_FOR > now
        });
        // The nodes are read only when there is something to do: a fire due, or one followed.
        let due = live
            .values()
            .any(|j| match memory.cursors.get(&j.spec.name) {
                Some(c) if c.revision == j.revision => j
                    .spec
                    .schedule()
                    .and_then(|s| s.next_after(c.at))
                    .is_some_and(|next| next <= now),
                _ => true,
            });
        if !due && memory.open.is_empty() {
            return Ok(());
        }
        let (mut nodes, pauses, windows) =
            state::read(&self.store, |s| Ok((s.nodes()?, s.pauses()?, s.windows()?))).await?;
        memory.holds = op_proto::holds::Holds {
            pauses,
            windows,
            draining: false,
        };
        self.beats.overlay(&mut nodes);
        nodes.retain(|n| n.status != NodeStatus::Left);
        nodes.sort_by_key(|n| n.node_id);
        memory.suspects.retain(|_, until| *until > now);

        for job in live.values() {
            self.fire_job(memory, job, &nodes, now).await?;
        }
        self.follow(memory, &live, &nodes, now).await
    }

    async fn fire_job(
        &self,
        memory: &mut Memory,
        job: &JobRecord,
        nodes: &[NodeInfo],
        now: DateTime<Utc>,
    ) -> Result<(), DomainError> {
        let spec = &job.spec;
        let Some(schedule) = spec.schedule() else {
            return Ok(());
        };
        let fire_of = |at| {
            Fire::new(
                &schedule,
                at,
                spec.grace(),
                chrono::Duration::zero(),
                None,
                spec.concurrency,
            )
        };
        let cursor = memory
            .cursors
            .entry(spec.name.clone())
            .or_insert_with(|| Cursor {
                revision: job.revision,
                // A new term looks back one Grace: a fire the old leader did not start (or did:
                // then the store refuses its id again) is still due.
                at: job.updated_at.max(now - fire_of(now).grace),
            });
        if cursor.revision != job.revision {
            *cursor = Cursor {
                revision: job.revision,
                at: job.updated_at,
            };
        }
        let due: Vec<DateTime<Utc>> = expected_fires(&schedule, cursor.at, now).collect();
        let skip = due.len().saturating_sub(MAX_FIRES_PER_PASS);
        for at in due.iter().copied() {
            cursor.at = cursor.at.max(at);
        }
        for at in due.into_iter().skip(skip) {
            let fire = fire_of(at);
            if now > at + fire.grace {
                // Its start window passed (the leader was being elected): not started, so the
                // fire judge reports it missed.
                tracing::warn!(job = %spec.name, fire = %at, "RunOn fire passed its Grace before a leader could start it; not started");
                continue;
            }
            let mut open = OpenFire {
                job: spec.name.clone(),
                revision: job.revision,
                fire: at,
                invocations: Vec::new(),
                tried: HashSet::new(),
                handled: HashSet::new(),
            };
            let n = spec.run_on.count().unwrap_or(1) as usize;
            match self
                .create(memory, job, nodes, &mut open, n, None, false, now)
                .await?
            {
                Created::NoHost => {
                    tracing::warn!(job = %spec.name, fire = %at, "no selected host is Ready for a RunOn fire; not started");
                    continue;
                }
                Created::New(_) => {}
                Created::Existed => self.adopt(&mut open).await?,
            }
            memory.open.push(open);
        }
        Ok(())
    }

    /// A fire another term started: its invocations as stored (attempt by attempt).
    async fn adopt(&self, open: &mut OpenFire) -> Result<(), DomainError> {
        let ids: Vec<Uuid> = (0..MAX_ATTEMPTS)
            .map(|k| fire_id(&open.job, open.revision, open.fire, k))
            .collect();
        let found = state::read(&self.store, move |s| {
            let mut found = Vec::new();
            for id in ids {
                match s.invocation(id, false)? {
                    Some((row, targets)) => found.push((
                        id,
                        row.detail.retry_of.is_some(),
                        targets.iter().map(|t| t.node_id).collect::<Vec<_>>(),
                    )),
                    None => break,
                }
            }
            Ok(found)
        })
        .await?;
        open.invocations.clear();
        for (id, retry, hosts) in found {
            // Replacements and retries both link `retry_of`; which one it was no longer matters
            // except that a retry is not retried again: count every later attempt as one.
            open.invocations.push((id, retry));
            open.tried.extend(hosts);
        }
        Ok(())
    }

    /// Creates the next attempt of `open` on `n` picked hosts; `retry_of` links the attempt it
    /// replaces.
    #[allow(clippy::too_many_arguments)]
    async fn create(
        &self,
        memory: &Memory,
        job: &JobRecord,
        nodes: &[NodeInfo],
        open: &mut OpenFire,
        n: usize,
        retry_of: Option<Uuid>,
        is_retry: bool,
        now: DateTime<Utc>,
    ) -> Result<Created, DomainError> {
        let attempt = open.invocations.len() as u32;
        if attempt >= MAX_ATTEMPTS {
            return Ok(Created::NoHost);
        }
        let spec = &job.spec;
        let selector = spec.selector();
        let candidates = |suspects: bool| -> Vec<Candidate> {
            nodes
                .iter()
                .filter(|n| n.status == NodeStatus::Ready && n.drain.is_none())
                .filter(|n| !open.tried.contains(&n.node_id))
                .filter(|n| suspects == memory.suspects.contains_key(&n.node_id))
                .filter(|n| {
                    let host = n.identity();
                    selector.matches(&host)
                        && memory
                            .holds
                            .why_held(&spec.name, &host.labels, open.fire)
                            .is_none()
                })
                .map(|n| Candidate {
                    node_id: n.node_id,
                    load: n.load.as_ref().map(|l| l.load1 / f64::from(l.cpus.max(1))),
                })
                .collect()
        };
        let mut picked = pick(spec.pick, &spec.name, open.fire, &candidates(false), n);
        if picked.len() < n {
            picked.extend(pick(
                spec.pick,
                &spec.name,
                open.fire,
                &candidates(true),
                n - picked.len(),
            ));
        }
        let id = fire_id(&spec.name, job.revision, open.fire, attempt);
        if picked.is_empty() {
            return Ok(Created::NoHost);
        }
        let targets: Vec<NewTarget> = picked
            .iter()
            .filter_map(|id| nodes.iter().find(|n| n.node_id == *id))
            .map(|n| NewTarget {
                node_id: n.node_id,
                hostname: n.hostname.clone(),
                ips: n.ips.clone(),
                run_id: Uuid::now_v7(),
                batch: 0,
            })
            .collect();
        let ack = self.ack_timeout;
        let options = InvocationOptions {
            deadline_secs: (DEFAULT_DEADLINE_SECS + spec.timeout_secs).min(MAX_WAIT_SECS),
            ack_secs: (!ack.is_zero()).then(|| ack.as_secs().max(1)),
            ..InvocationOptions::default()
        };
        let release: Vec<Uuid> = targets.iter().map(|t| t.run_id).collect();
        let hosts: Vec<String> = targets.iter().map(|t| t.hostname.clone()).collect();
        let result = self
            .writer
            .write(Command::CreateInvocation {
                invocation: Box::new(NewInvocation {
                    id,
                    kind: InvocationKind::Job,
                    spec: spec.clone(),
                    revision: job.revision,
                    params: Default::default(),
                    options,
                    targets,
                    unreachable: Vec::new(),
                    release,
                    retry_of,
                    fire: Some(open.fire),
                }),
                at: now,
                actor: ACTOR.into(),
            })
            .await;
        match result {
            Ok(_) => {
                tracing::info!(job = %spec.name, fire = %open.fire, attempt, invocation = %id, ?hosts, "RunOn fire started");
                open.invocations.push((id, is_retry));
                open.tried.extend(picked.iter().copied());
                Ok(Created::New(picked))
            }
            Err(DomainError::Rejected(r)) if r.code == RejectionCode::Conflict => {
                if r.message.contains("already exists") {
                    Ok(Created::Existed)
                } else {
                    // The job was saved in between: the next pass fires the new revision.
                    Ok(Created::NoHost)
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Replaces the unresponsive hosts of the open fires and retries the failed ones.
    async fn follow(
        &self,
        memory: &mut Memory,
        live: &HashMap<&str, &JobRecord>,
        nodes: &[NodeInfo],
        now: DateTime<Utc>,
    ) -> Result<(), DomainError> {
        let mut open = std::mem::take(&mut memory.open);
        let ids: Vec<Uuid> = open
            .iter()
            .flat_map(|f| f.invocations.iter().map(|(id, _)| *id))
            .collect();
        let stored = state::read(&self.store, move |s| {
            let mut out = HashMap::new();
            for id in ids {
                if let Some((row, targets)) = s.invocation(id, false)? {
                    out.insert(id, (row, targets));
                }
            }
            Ok(out)
        })
        .await?;
        let mut keep = Vec::with_capacity(open.len());
        for mut fire in open.drain(..) {
            let Some(job) = live.get(fire.job.as_str()) else {
                continue;
            };
            let mut busy = false;
            let mut actions: Vec<(Uuid, bool)> = Vec::new();
            for (inv, is_retry) in &fire.invocations {
                let Some((_, targets)) = stored.get(inv) else {
                    busy = true;
                    continue;
                };
                for t in targets {
                    if fire.handled.contains(&t.run_id) {
                        continue;
                    }
                    match t.status {
                        HostStatus::Pending | HostStatus::Running => busy = true,
                        HostStatus::Unresponsive => {
                            memory.suspects.insert(t.node_id, now + SUSPECT_FOR);
                            fire.handled.insert(t.run_id);
                            actions.push((*inv, false));
                        }
                        HostStatus::Failed
                        | HostStatus::Timeout
                        | HostStatus::Killed
                        | HostStatus::Lost
                            if job.spec.retry_on_another && !*is_retry =>
                        {
                            fire.handled.insert(t.run_id);
                            actions.push((*inv, true));
                        }
                        _ => {}
                    }
                }
            }
            for (inv, is_retry) in actions {
                match self
                    .create(memory, job, nodes, &mut fire, 1, Some(inv), is_retry, now)
                    .await?
                {
                    Created::New(hosts) => {
                        busy = true;
                        tracing::info!(job = %fire.job, fire = %fire.fire, ?hosts, retry = is_retry, "RunOn fire moved to another host");
                    }
                    Created::Existed => {
                        self.adopt(&mut fire).await?;
                        busy = true;
                    }
                    Created::NoHost => {
                        tracing::warn!(job = %fire.job, fire = %fire.fire, "no other selected Ready host to move a RunOn fire to");
                    }
                }
            }
            if busy {
                keep.push(fire);
            }
        }
        memory.open = keep;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn fire_ids_are_stable_and_distinct() {
        let t = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let a = fire_id("report", 3, t, 0);
        assert_eq!(a, fire_id("report", 3, t, 0));
        for other in [
            fire_id("report", 4, t, 0),
            fire_id("report", 3, t + chrono::Duration::seconds(1), 0),
            fire_id("report", 3, t, 1),
            fire_id("reports", 3, t, 0),
        ] {
            assert_ne!(a, other);
        }
    }
}
