//! The leader's fire judge (issue 20): for every enabled cron job, the fires that should have
//! happened on every host it selects, compared with what arrived, in one pass per job.
//!
//! Per job it keeps a cursor: the last fire judged (in memory, on the leader; a new leader starts
//! from the job's latest judged fire in the store, or the job's save time). Each pass takes the
//! job's fires after the cursor whose deadline (`fire + Jitter + Grace`) plus `settle` has passed,
//! reads the job's cron runs around them with ONE query, adds the runs the nodes report running,
//! and judges each fire over all selected hosts with `op_proto::expect::judge_fire`. Every
//! verdict of the pass goes into ONE `JudgeFires` command; its apply keeps the latest judged
//! fires per job and derives the `run.missed` / `run.late` / `run.skipped` / `run.overrunning`
//! events. So 10,000 hosts cost one query, one merge and one command per pass, not 10,000 timers
//! or rows per fire.
//!
//! A job saved (edited, enabled again) restarts its cursor at its save time, so a job saved a few
//! seconds ago reports nothing; a disabled or removed job drops its cursor.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use op_proto::api::JobRecord;
use op_proto::expect::{
    Fire, FireSummary, HostAtFire, MissedReport, ObservedRun, Readiness, expected_fires,
    fire_label, judge_fire,
};
use op_proto::judged::{JudgedFire, OverrunningRun, SkewedHost};
use op_proto::{NodeInfo, NodeStatus, RunStatus, Trigger};
use op_store::{Command, Store};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clock::Clock;
use crate::error::DomainError;
use crate::heartbeat::HeartbeatBuffer;
use crate::state::{self, Writer};

/// Most fires of one job judged in one pass: a leader that took over after a long time judges
/// the newest ones, not hours of a 1 Hz schedule.
const MAX_FIRES_PER_PASS: usize = 60;

/// What the judge uses.
pub struct FireJudge {
    pub store: Arc<Store>,
    /// Commits the verdicts; also tells whether this manager leads.
    pub writer: Writer,
    /// The latest beats of the nodes connected here (the runs they report running).
    pub beats: Arc<HeartbeatBuffer>,
    pub clock: Arc<dyn Clock>,
    /// How often the leader judges.
    pub every: Duration,
    /// How long after a fire's deadline its runs' records may take to arrive.
    pub settle: Duration,
    /// A node whose clock is off by more than this raises `node.clock_skew`.
    pub skew_threshold: Duration,
}

/// Where the judgement of one job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    /// The job revision the cursor was set for: a new revision restarts it.
    revision: u64,
    /// Fires up to this instant are judged.
    at: DateTime<Utc>,
}

/// The judge's memory between passes (the leader's only).
#[derive(Debug, Default)]
pub struct Cursors {
    jobs: HashMap<String, Cursor>,
    /// Runs already committed as overrunning (the apply also announces each once).
    overrunning: HashSet<Uuid>,
    /// The skewed nodes last committed (`None` before the first pass of this term).
    skewed: Option<BTreeSet<String>>,
}

/// Judges every `every` until `shutdown`, on the leader only.
pub async fn run(judge: FireJudge, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(judge.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cursors = Cursors::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if !judge.writer.is_leader() {
            // A later term starts again from what the store says was judged.
            cursors = Cursors::default();
            continue;
        }
        if let Err(e) = judge.pass(&mut cursors).await {
            tracing::warn!(error = %e, "judging fires failed");
        }
    }
}

impl FireJudge {
    /// One pass over every enabled cron job; commits one `JudgeFires` when there is anything.
    pub async fn pass(&self, cursors: &mut Cursors) -> Result<(), DomainError> {
        let now = self.clock.now();
        let settle = chrono::Duration::from_std(self.settle).unwrap_or(chrono::Duration::MAX);
        let (jobs, mut nodes, judged) = state::read(&self.store, |s| {
            Ok((s.jobs()?, s.nodes()?, s.judged_fires(None)?))
        })
        .await?;
        self.beats.overlay(&mut nodes);
        nodes.retain(|n| n.status != NodeStatus::Left);
        nodes.sort_by_key(|n| n.node_id);

        let live: HashSet<&str> = jobs
            .iter()
            .filter(|j| j.spec.enabled && j.spec.schedule().is_some())
            .map(|j| j.spec.name.as_str())
            .collect();
        cursors.jobs.retain(|name, _| live.contains(name.as_str()));

        let mut fires = Vec::new();
        let mut overrunning = Vec::new();
        for job in jobs.iter().filter(|j| live.contains(j.spec.name.as_str())) {
            let latest = judged
                .get(&job.spec.name)
                .and_then(|f| f.first())
                .map(|f| f.fire);
            let cursor = cursors
                .jobs
                .entry(job.spec.name.clone())
                .or_insert_with(|| start(job, latest, settle));
            if cursor.revision != job.revision {
                *cursor = start(job, None, settle);
            }
            let selected: Vec<&NodeInfo> = {
                let selector = job.spec.selector();
                nodes
                    .iter()
                    .filter(|n| selector.matches(&n.identity()))
                    .collect()
            };
            if let Some(max) = job.spec.max_duration() {
                for node in &selected {
                    for r in node.running.iter().filter(|r| r.job == job.spec.name) {
                        if now - r.started_at > max && cursors.overrunning.insert(r.run_id) {
                            overrunning.push(OverrunningRun {
                                run_id: r.run_id,
                                job: job.spec.name.clone(),
                                host: node.hostname.clone(),
                                labels: node.labels.clone(),
                                started_at: r.started_at,
                                max_duration_secs: job.spec.max_duration_secs.unwrap_or(0),
                            });
                        }
                    }
                }
            }
            let judged = self.judge_job(job, cursor, &selected, now, settle).await?;
            fires.extend(judged);
        }
        if cursors.overrunning.len() > 100_000 {
            cursors.overrunning.clear();
        }
        // Clocks: the set of skewed live nodes, committed when it changed. A node leaves it only
        // when a beat measured its clock right (a record without a measure keeps it in).
        let limit = i64::try_from(self.skew_threshold.as_millis()).unwrap_or(i64::MAX);
        let was = |host: &str| cursors.skewed.as_ref().is_some_and(|s| s.contains(host));
        let mut skewed: Vec<SkewedHost> = Vec::new();
        for n in nodes.iter().filter(|n| n.status != NodeStatus::NotReady) {
            let skew_ms = match n.clock_skew_ms {
                Some(ms) if ms.unsigned_abs() > limit.unsigned_abs() => ms,
                None if was(&n.hostname) => 0,
                _ => continue,
            };
            skewed.push(SkewedHost {
                host: n.hostname.clone(),
                labels: n.labels.clone(),
                skew_ms,
            });
        }
        let names: BTreeSet<String> = skewed.iter().map(|h| h.host.clone()).collect();
        let skewed = (cursors.skewed.as_ref() != Some(&names)).then_some(skewed);
        if fires.is_empty() && overrunning.is_empty() && skewed.is_none() {
            return Ok(());
        }
        self.writer
            .write(Command::JudgeFires {
                at: now,
                fires,
                overrunning,
                skewed,
            })
            .await?;
        cursors.skewed = Some(names);
        Ok(())
    }

    /// The fires of `job` due for judgement, judged; moves the cursor past them.
    async fn judge_job(
        &self,
        job: &JobRecord,
        cursor: &mut Cursor,
        selected: &[&NodeInfo],
        now: DateTime<Utc>,
        settle: chrono::Duration,
    ) -> Result<Vec<JudgedFire>, DomainError> {
        let spec = &job.spec;
        let Some(schedule) = spec.schedule() else {
            return Ok(Vec::new());
        };
        let jitter = chrono::Duration::seconds(i64::try_from(spec.jitter_secs).unwrap_or(0));
        let mut due: Vec<Fire> = Vec::new();
        for at in expected_fires(&schedule, cursor.at, now) {
            let fire = Fire::new(
                &schedule,
                at,
                spec.grace(),
                jitter,
                spec.max_duration(),
                spec.concurrency,
            );
            if fire.deadline() + settle > now {
                break;
            }
            due.push(fire);
        }
        let Some(last) = due.last() else {
            return Ok(Vec::new());
        };
        cursor.at = last.at;
        if due.len() > MAX_FIRES_PER_PASS {
            due.drain(..due.len() - MAX_FIRES_PER_PASS);
        }
        let since = due[0].at;
        let name = spec.name.clone();
        let records = state::read(&self.store, move |s| s.fire_runs(&name, since, now)).await?;

        let mut seen: HashSet<Uuid> = HashSet::new();
        let mut runs: Vec<ObservedRun> = Vec::new();
        let mut missed: Vec<MissedReport> = Vec::new();
        for r in &records {
            seen.insert(r.run_id);
            if r.status == RunStatus::Missed {
                if let Some(fire) = r.planned_at {
                    missed.push(MissedReport {
                        node_id: r.node_id,
                        fire,
                        reason: r.error.clone().unwrap_or_else(|| "agent down".into()),
                    });
                }
            } else {
                runs.push(ObservedRun::from(r));
            }
        }
        // Runs the nodes report running whose record is not among those read. A beat lists the
        // runs alive when it was sent, so a run may have ended since (a stopped agent's last
        // list): one whose final record is stored is not alive, or its host's later fires would
        // look blocked (skipped) instead of missed.
        let listed: Vec<(Uuid, Uuid, DateTime<Utc>)> = selected
            .iter()
            .flat_map(|n| {
                n.running
                    .iter()
                    .filter(|r| r.job == spec.name && r.trigger == Trigger::Cron)
                    .map(|r| (n.node_id, r.run_id, r.started_at))
            })
            .filter(|(_, id, _)| !seen.contains(id))
            .collect();
        if !listed.is_empty() {
            let ids: Vec<Uuid> = listed.iter().map(|(_, id, _)| *id).collect();
            let ended: HashSet<Uuid> = state::read(&self.store, move |s| {
                let mut ended = HashSet::new();
                for id in ids {
                    if s.run(id)?.is_some_and(|r| r.status != RunStatus::Running) {
                        ended.insert(id);
                    }
                }
                Ok(ended)
            })
            .await?;
            for (node_id, run_id, started_at) in listed {
                if !ended.contains(&run_id) {
                    runs.push(ObservedRun {
                        run_id,
                        node_id,
                        trigger: Trigger::Cron,
                        planned_at: None,
                        started_at: Some(started_at),
                        ended_at: None,
                        status: RunStatus::Running,
                    });
                }
            }
        }
        runs.sort_by_key(|r| r.node_id);
        missed.sort_by_key(|m| m.node_id);

        // A RunOn job's fires are started by the leader, which never picks a held host
        // (`runon`): the hosts a pause, an open window or a drain holds at the fire are not
        // expected to run it, so a fire they all hold is not missed.
        let holds = if spec.run_on.is_picked() {
            let (pauses, windows) =
                state::read(&self.store, |s| Ok((s.pauses()?, s.windows()?))).await?;
            Some(op_proto::holds::Holds {
                pauses,
                windows,
                draining: false,
            })
        } else {
            None
        };
        let zone = spec.zone();
        let mut out = Vec::with_capacity(due.len());
        for fire in &due {
            let hosts: Vec<HostAtFire> = match spec.run_on.count() {
                None => selected
                    .iter()
                    .map(|n| HostAtFire {
                        node_id: n.node_id,
                        readiness: readiness(n, fire.at),
                    })
                    .collect(),
                Some(n) => {
                    let free: Vec<&NodeInfo> = selected
                        .iter()
                        .copied()
                        .filter(|node| {
                            // A host that ran the fire is judged on its run, held now or not.
                            runs.iter().any(|r| {
                                r.node_id == node.node_id && r.belongs_to(fire.at, fire.next)
                            }) || node.drain.is_none()
                                && holds.as_ref().is_none_or(|h| {
                                    h.why_held(&spec.name, &node.identity().labels, fire.at)
                                        .is_none()
                                })
                        })
                        .collect();
                    picked_hosts(spec, fire, n as usize, &free, &runs)
                }
            };
            let verdicts = match judge_fire(fire, now, &hosts, &runs, &missed) {
                Ok(v) => v,
                Err(e) => {
                    // Unreachable: every input was sorted above.
                    tracing::warn!(job = %spec.name, error = %e, "fire not judged");
                    continue;
                }
            };
            let summary = FireSummary::new(&spec.name, fire.at, &verdicts);
            let sentences = summary.sentences(zone);
            out.push(JudgedFire::new(
                &summary,
                fire_label(fire.at, zone),
                sentences,
                &verdicts,
                |id| match selected.binary_search_by_key(&id, |n| n.node_id) {
                    Ok(i) => (selected[i].hostname.clone(), selected[i].labels.clone()),
                    Err(_) => (id.to_string(), Default::default()),
                },
            ));
        }
        Ok(out)
    }
}

/// The hosts a fire of a `RunOn` job is judged on (issue 23): N in total, not every selected
/// host. The hosts that ran it (a run carrying the fire), and when fewer than N did, the ones the
/// leader would pick now among the others (Ready ones first): a fire nobody started is missed
/// on them. A host that was picked but replaced (unresponsive) ran nothing and is not judged.
fn picked_hosts(
    spec: &op_proto::JobSpec,
    fire: &Fire,
    n: usize,
    selected: &[&NodeInfo],
    runs: &[ObservedRun],
) -> Vec<HostAtFire> {
    let ran: BTreeSet<Uuid> = runs
        .iter()
        .filter(|r| r.belongs_to(fire.at, fire.next))
        .map(|r| r.node_id)
        .filter(|id| selected.binary_search_by_key(id, |n| n.node_id).is_ok())
        .collect();
    let mut hosts: Vec<HostAtFire> = selected
        .iter()
        .filter(|n| ran.contains(&n.node_id))
        .map(|n| HostAtFire {
            node_id: n.node_id,
            readiness: Readiness::Ready,
        })
        .collect();
    for want in [Readiness::Ready, Readiness::NotReady] {
        let short = n.saturating_sub(hosts.len());
        if short == 0 {
            break;
        }
        let others: Vec<op_proto::runon::Candidate> = selected
            .iter()
            .filter(|n| !ran.contains(&n.node_id) && readiness(n, fire.at) == want)
            .map(|n| op_proto::runon::Candidate {
                node_id: n.node_id,
                load: None,
            })
            .collect();
        for id in op_proto::runon::pick(spec.pick, &spec.name, fire.at, &others, short) {
            hosts.push(HostAtFire {
                node_id: id,
                readiness: want,
            });
        }
    }
    hosts.sort_by_key(|h| h.node_id);
    hosts
}

/// Where a job's judgement starts: `settle` after its save (the agents need a moment to receive
/// a new revision: a 1 Hz job's first fire may come before they hold it, and nobody missed it),
/// or the latest fire judged under this revision (a new leader continues there).
fn start(
    job: &JobRecord,
    latest_judged: Option<DateTime<Utc>>,
    settle: chrono::Duration,
) -> Cursor {
    let delivered = job
        .updated_at
        .checked_add_signed(settle)
        .unwrap_or(job.updated_at);
    let at = match latest_judged {
        Some(t) if t > job.updated_at => t,
        _ => delivered,
    };
    Cursor {
        revision: job.revision,
        at,
    }
}

/// A host's standing at a fire, as far as the manager knows it now: a node that registered after
/// the fire was not expected to run it; a NotReady node missed it for that reason.
fn readiness(node: &NodeInfo, fire: DateTime<Utc>) -> Readiness {
    if node.first_seen > fire {
        Readiness::Excluded
    } else if node.status == NodeStatus::NotReady {
        Readiness::NotReady
    } else {
        Readiness::Ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use op_proto::{Concurrency, JobSpec, Schedule, Zone};

    fn node(n: u8, status: NodeStatus) -> NodeInfo {
        let long_ago = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        NodeInfo {
            node_id: Uuid::from_u128(u128::from(n)),
            hostname: format!("node-{n}"),
            ips: vec![format!("10.0.0.{n}").parse().unwrap()],
            labels: Default::default(),
            manager_labels: Default::default(),
            agent_version: "t".into(),
            os: String::new(),
            arch: String::new(),
            machine_id: String::new(),
            status,
            first_seen: long_ago,
            last_seen: long_ago,
            load: None,
            running: vec![],
            packages: vec![],
            stats: Default::default(),
            degraded: None,
            clock_skew_ms: None,
            capabilities: Vec::new(),
            drain: None,
            facts: None,
        }
    }

    fn ran(node: u8, fire: DateTime<Utc>, status: RunStatus) -> ObservedRun {
        ObservedRun {
            run_id: Uuid::now_v7(),
            node_id: Uuid::from_u128(u128::from(node)),
            trigger: Trigger::Cron,
            planned_at: Some(fire),
            started_at: Some(fire),
            ended_at: Some(fire),
            status,
        }
    }

    /// A RunOn job is judged on N hosts per fire: those that ran it (a retry elsewhere adds its
    /// host), else the ones the pick would choose (Ready first), never every selected host.
    #[test]
    fn run_on_fires_are_judged_on_the_hosts_that_ran_them_or_n_picked() {
        let schedule = Schedule::parse("* * * * * * *", Zone::parse("UTC").unwrap()).unwrap();
        let at = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let fire = Fire::new(
            &schedule,
            at,
            None,
            chrono::Duration::zero(),
            None,
            Concurrency::Forbid,
        );
        let mut spec = JobSpec::new("solo", "true");
        spec.run_on = op_proto::runon::RunOn::Hosts(1);
        let nodes = [
            node(1, NodeStatus::Ready),
            node(2, NodeStatus::NotReady),
            node(3, NodeStatus::Ready),
            node(4, NodeStatus::Ready),
        ];
        let selected: Vec<&NodeInfo> = nodes.iter().collect();
        let ids = |hosts: &[HostAtFire]| -> Vec<u128> {
            hosts.iter().map(|h| h.node_id.as_u128()).collect()
        };

        let runs = [ran(3, at, RunStatus::Ok)];
        assert_eq!(ids(&picked_hosts(&spec, &fire, 1, &selected, &runs)), [3]);
        // A run of another fire does not count for this one.
        let other = [ran(3, at + chrono::Duration::seconds(1), RunStatus::Ok)];
        let hosts = picked_hosts(&spec, &fire, 1, &selected, &other);
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].readiness, Readiness::Ready);
        assert_ne!(hosts[0].node_id.as_u128(), 2);
        // Failed on one host, retried on another: both judged.
        let retried = [ran(1, at, RunStatus::Failed), ran(4, at, RunStatus::Ok)];
        assert_eq!(
            ids(&picked_hosts(&spec, &fire, 1, &selected, &retried)),
            [1, 4]
        );
        // Nothing ran: N hosts missed, Ready ones first, then NotReady.
        let hosts = picked_hosts(&spec, &fire, 4, &selected, &[]);
        assert_eq!(ids(&hosts), [1, 2, 3, 4]);
        assert_eq!(hosts[1].readiness, Readiness::NotReady);
        let verdicts =
            judge_fire(&fire, at + chrono::Duration::hours(1), &hosts, &[], &[]).unwrap();
        assert_eq!(verdicts.len(), 4);
    }

    #[test]
    fn a_new_revision_is_judged_from_settle_after_its_save_and_a_new_leader_continues() {
        let saved = Utc.timestamp_opt(1_800_000_000, 500_000_000).unwrap();
        let job = JobRecord {
            spec: JobSpec::new("tick", "true"),
            revision: 3,
            created_at: saved,
            updated_at: saved,
            updated_by: "t".into(),
        };
        let settle = chrono::Duration::seconds(2);
        // The fires of the first two seconds after the save are not judged: the agents may
        // not hold the revision yet.
        let fresh = start(&job, None, settle);
        assert_eq!(fresh.at, saved + settle);
        assert_eq!(fresh.revision, 3);
        let schedule = Schedule::parse("* * * * * * *", Zone::parse("UTC").unwrap()).unwrap();
        let first = expected_fires(&schedule, fresh.at, saved + chrono::Duration::seconds(10))
            .next()
            .unwrap();
        assert_eq!(first, Utc.timestamp_opt(1_800_000_003, 0).unwrap());
        // A later leader continues after the latest judged fire, even within that time.
        let judged = saved + chrono::Duration::milliseconds(500);
        assert_eq!(start(&job, Some(judged), settle).at, judged);
        // A fire judged before the save (an earlier revision) does not move the start back.
        let before = saved - chrono::Duration::seconds(30);
        assert_eq!(start(&job, Some(before), settle).at, saved + settle);
    }
}
