//! Rollout commands (issue 21): start (with the upload or save it stages), advance, halt, and
//! the operator's pause, resume, abort and promote.
//!
//! Thresholds are derived here, from the nodes at this point of the log, so every member agrees
//! on who is admitted without a row per host. Every change of a threshold changes the desired
//! state of every node (`bump_desired_all`): the hub filters each node's answer by it.

use chrono::{DateTime, Utc};
use op_proto::NodeStatus;
use op_proto::api::JobRecord;
use op_proto::events::EventKind;
use op_proto::incidents::{Input, RolloutChange};
use op_proto::rollout::{
    RolloutAction, RolloutInfo, RolloutKind, RolloutState, threshold as stage_threshold,
};
use rusqlite::{Connection, params};
use uuid::Uuid;

use super::{Changes, Outcome, audit, bump_desired_all};
use crate::codec::{ms, to_json};
use crate::command::{Command, CommandResult, NewRollout, Rejection};
use crate::error::Result;
use crate::read;

/// The Ready, Degraded and NotReady nodes a rollout of `kind`/`subject` selects now: for a
/// package, the hosts its version `version` targets.
fn selected(
    conn: &Connection,
    kind: RolloutKind,
    subject: &str,
    version: u64,
) -> Result<Vec<Uuid>> {
    let nodes = read::nodes::all(conn)?;
    let live = nodes.into_iter().filter(|n| n.status != NodeStatus::Left);
    Ok(match kind {
        RolloutKind::Package => match read::packages::version(conn, subject, version)? {
            Some(v) => live
                .filter(|n| v.target.matches(&n.identity()))
                .map(|n| n.node_id)
                .collect(),
            None => Vec::new(),
        },
        RolloutKind::Job => match read::jobs::load(conn, subject)? {
            Some((job, false)) => {
                let selector = job.spec.selector();
                live.filter(|n| selector.matches(&n.identity()))
                    .map(|n| n.node_id)
                    .collect()
            }
            _ => Vec::new(),
        },
    })
}

fn threshold_at(conn: &Connection, info: &RolloutInfo, stage: usize) -> Result<Option<u64>> {
    let nodes = selected(conn, info.kind, &info.subject, info.version)?;
    Ok(stage_threshold(info.id, info.plan.stages[stage], &nodes))
}

/// Writes the changing columns of `info`.
fn update(conn: &Connection, info: &RolloutInfo) -> Result<()> {
    conn.execute(
        "UPDATE rollouts SET state = ?2, stage = ?3, threshold = ?4, stage_entered_at = ?5,
           counted_from = ?6, updated_at = ?7, reason = ?8 WHERE id = ?1",
        params![
            info.id.to_string(),
            info.state.as_str(),
            info.stage as i64,
            info.threshold.map(|t| t as i64),
            ms(info.stage_entered_at),
            ms(info.counted_from),
            ms(info.updated_at),
            info.reason,
        ],
    )?;
    Ok(())
}

fn subject_ref(info: &RolloutInfo) -> (Option<String>, Option<String>) {
    match info.kind {
        RolloutKind::Job => (Some(info.subject.clone()), None),
        RolloutKind::Package => (None, Some(format!("{}@{}", info.subject, info.version))),
    }
}

fn event(
    info: &RolloutInfo,
    kind: EventKind,
    hosts: Vec<String>,
    summary: String,
    ch: &mut Changes,
) {
    let (job, package) = subject_ref(info);
    ch.inputs.push(Input::Rollout(RolloutChange {
        time: info.updated_at,
        kind,
        rollout: info.id,
        job,
        package,
        hosts,
        summary,
    }));
}

fn what(info: &RolloutInfo) -> String {
    match info.kind {
        RolloutKind::Job => format!("job {} revision {}", info.subject, info.version),
        RolloutKind::Package => format!("package {} version {}", info.subject, info.version),
    }
}

/// Marks the unfinished rollouts of `kind`/`subject` superseded.
fn supersede(
    conn: &Connection,
    kind: RolloutKind,
    subject: &str,
    at: DateTime<Utc>,
    why: &str,
) -> Result<()> {
    conn.execute(
        "UPDATE rollouts SET state = 'superseded', updated_at = ?3, reason = ?4
         WHERE kind = ?1 AND subject = ?2 AND state NOT IN ('finished', 'superseded')",
        params![kind.as_str(), subject, ms(at), why],
    )?;
    Ok(())
}

/// After any other command that changes a package's current version or a job's revision: its
/// unfinished rollout no longer decides anything.
pub(super) fn after(conn: &Connection, command: &Command) -> Result<()> {
    let (kind, subject, at) = match command {
        Command::AddPackageVersion { name, at, .. } | Command::RollbackPackage { name, at, .. } => {
            (RolloutKind::Package, name.as_str(), *at)
        }
        Command::SaveJob { spec, at, .. } => (RolloutKind::Job, spec.name.as_str(), *at),
        Command::DeleteJob { name, at, .. } | Command::SetJobEnabled { name, at, .. } => {
            (RolloutKind::Job, name.as_str(), *at)
        }
        _ => return Ok(()),
    };
    supersede(
        conn,
        kind,
        subject,
        at,
        "replaced by a change without a rollout",
    )
}

pub(super) fn start(
    conn: &Connection,
    index: u64,
    new: &NewRollout,
    change: &Command,
    ch: &mut Changes,
) -> Outcome {
    if new.plan.stages.is_empty() {
        return Ok(Err(Rejection::invalid(
            "a rollout needs at least one stage",
        )));
    }
    if read::rollouts::one(conn, new.id)?.is_some() {
        return Ok(Err(Rejection::conflict(format!(
            "rollout {} exists",
            new.id
        ))));
    }
    let (kind, subject, at, actor) = match change {
        Command::AddPackageVersion {
            name, at, actor, ..
        } => (RolloutKind::Package, name.clone(), *at, actor.clone()),
        Command::SaveJob { spec, at, actor } => {
            (RolloutKind::Job, spec.name.clone(), *at, actor.clone())
        }
        _ => {
            return Ok(Err(Rejection::invalid(
                "a rollout stages a package upload or a job save only",
            )));
        }
    };
    // What every host has now: the previous of an unfinished rollout of what is current, else
    // the current version or revision.
    let unfinished = read::rollouts::unfinished_of(conn, kind, &subject)?;
    let (previous, previous_job): (Option<u64>, Option<JobRecord>) = match kind {
        RolloutKind::Package => {
            let current = read::packages::current_version(conn, &subject)?;
            match unfinished.iter().find(|(r, _)| Some(r.version) == current) {
                Some((r, _)) => (r.previous, None),
                None => (current, None),
            }
        }
        RolloutKind::Job => {
            let current = match read::jobs::load(conn, &subject)? {
                Some((r, false)) if r.spec.enabled => Some(r),
                _ => None,
            };
            let revision = current.as_ref().map(|r| r.revision);
            match unfinished
                .iter()
                .find(|(r, _)| revision.is_some() && Some(r.version) == revision)
            {
                Some((r, job)) => (r.previous, job.clone()),
                None => (revision, current),
            }
        }
    };
    let result = match super::dispatch(conn, index, change, ch)? {
        Ok(r) => r,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let version = match &result {
        CommandResult::Package { version } => version.version,
        CommandResult::JobSaved { response } => response.revision,
        _ => return Ok(Err(Rejection::invalid("the staged change made no version"))),
    };
    supersede(
        conn,
        kind,
        &subject,
        at,
        &format!("superseded by rollout {}", new.id),
    )?;
    let mut info = RolloutInfo {
        id: new.id,
        kind,
        subject: subject.clone(),
        version,
        previous,
        plan: new.plan.clone(),
        state: RolloutState::Running,
        stage: 0,
        threshold: None,
        created_at: at,
        created_by: actor.clone(),
        stage_entered_at: at,
        counted_from: at,
        updated_at: at,
        reason: None,
    };
    info.threshold = threshold_at(conn, &info, 0)?;
    conn.execute(
        "INSERT INTO rollouts(id, kind, subject, version, previous, previous_job, plan, state,
           stage, threshold, created_at, created_by, stage_entered_at, counted_from, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'running', 0, ?8, ?9, ?10, ?9, ?9, ?9)",
        params![
            info.id.to_string(),
            kind.as_str(),
            subject,
            version as i64,
            previous.map(|v| v as i64),
            previous_job.as_ref().map(to_json),
            to_json(&info.plan),
            info.threshold.map(|t| t as i64),
            ms(at),
            actor,
        ],
    )?;
    audit(
        conn,
        at,
        &actor,
        "rollout.start",
        &info.id.to_string(),
        &format!(
            "{} stages {} step-wait {}s halt-on {}{}",
            what(&info),
            info.plan.stages_text(),
            info.plan.step_wait_secs,
            info.plan.halt_on,
            if info.plan.auto_rollback {
                " auto-rollback"
            } else {
                ""
            }
        ),
    )?;
    bump_desired_all(conn, index, ch)?;
    Ok(Ok(result))
}

fn load(conn: &Connection, id: Uuid) -> Result<std::result::Result<RolloutInfo, Rejection>> {
    Ok(match read::rollouts::one(conn, id)? {
        Some((info, _)) => Ok(info),
        None => Err(Rejection::not_found(format!("no rollout {id}"))),
    })
}

fn done(info: RolloutInfo) -> Outcome {
    Ok(Ok(CommandResult::Rollout {
        rollout: Box::new(info),
    }))
}

pub(super) fn advance(
    conn: &Connection,
    index: u64,
    id: Uuid,
    from_stage: usize,
    at: DateTime<Utc>,
    ch: &mut Changes,
) -> Outcome {
    let mut info = match load(conn, id)? {
        Ok(i) => i,
        Err(r) => return Ok(Err(r)),
    };
    if info.state != RolloutState::Running || info.stage != from_stage {
        // A stale decision (another term advanced it, or an operator paused it): nothing.
        return done(info);
    }
    info.updated_at = at;
    if from_stage + 1 >= info.plan.stages.len() {
        // After a last stage that admitted every rank, finishing changes no host's answer: no
        // bump, so the fleet is not woken once more for nothing (10,000 answers at 10,000 hosts).
        let changes_answers = info.threshold != Some(u64::MAX);
        info.state = RolloutState::Finished;
        info.threshold = Some(u64::MAX);
        update(conn, &info)?;
        audit(
            conn,
            at,
            "op-manager (rollouts)",
            "rollout.finish",
            &id.to_string(),
            &what(&info),
        )?;
        let summary = format!("rollout of {} finished: every host has it", what(&info));
        event(&info, EventKind::RolloutFinished, Vec::new(), summary, ch);
        if changes_answers {
            bump_desired_all(conn, index, ch)?;
        }
        return done(info);
    }
    info.stage = from_stage + 1;
    info.stage_entered_at = at;
    let before = info.threshold;
    info.threshold = threshold_at(conn, &info, info.stage)?.max(before);
    update(conn, &info)?;
    let stage = info.plan.stages[info.stage];
    audit(
        conn,
        at,
        "op-manager (rollouts)",
        "rollout.advance",
        &id.to_string(),
        &format!("{} stage {} ({stage})", what(&info), info.stage + 1),
    )?;
    let summary = format!(
        "rollout of {} advanced to stage {} of {} ({stage})",
        what(&info),
        info.stage + 1,
        info.plan.stages.len()
    );
    event(&info, EventKind::RolloutAdvanced, Vec::new(), summary, ch);
    bump_desired_all(conn, index, ch)?;
    done(info)
}

pub(super) fn halt(
    conn: &Connection,
    index: u64,
    id: Uuid,
    reason: &str,
    failed_hosts: &[String],
    at: DateTime<Utc>,
    ch: &mut Changes,
) -> Outcome {
    let mut info = match load(conn, id)? {
        Ok(i) => i,
        Err(r) => return Ok(Err(r)),
    };
    if info.state != RolloutState::Running {
        return done(info);
    }
    info.updated_at = at;
    info.reason = Some(reason.to_string());
    let rollback = info.plan.auto_rollback;
    if rollback {
        info.state = RolloutState::RolledBack;
        info.threshold = None;
    } else {
        info.state = RolloutState::Halted;
    }
    update(conn, &info)?;
    audit(
        conn,
        at,
        "op-manager (rollouts)",
        if rollback {
            "rollout.rollback"
        } else {
            "rollout.halt"
        },
        &id.to_string(),
        &format!("{}: {reason}", what(&info)),
    )?;
    let summary = format!(
        "rollout of {} halted{}: {reason}",
        what(&info),
        if rollback { " and rolled back" } else { "" }
    );
    event(
        &info,
        EventKind::RolloutHalted,
        failed_hosts.to_vec(),
        summary,
        ch,
    );
    if rollback {
        bump_desired_all(conn, index, ch)?;
    }
    done(info)
}

pub(super) fn action(
    conn: &Connection,
    index: u64,
    id: Uuid,
    action: RolloutAction,
    at: DateTime<Utc>,
    actor: &str,
    ch: &mut Changes,
) -> Outcome {
    let mut info = match load(conn, id)? {
        Ok(i) => i,
        Err(r) => return Ok(Err(r)),
    };
    if !info.state.filters() {
        return Ok(Err(Rejection::conflict(format!(
            "rollout {id} is {}: nothing to {}",
            info.state.as_str(),
            action.as_str()
        ))));
    }
    let from = info.state;
    info.updated_at = at;
    let mut desired = false;
    match action {
        RolloutAction::Pause => {
            if from != RolloutState::Running {
                return Ok(Err(Rejection::conflict(format!(
                    "rollout {id} is {}, not running",
                    from.as_str()
                ))));
            }
            info.state = RolloutState::Paused;
        }
        RolloutAction::Resume => {
            if !matches!(from, RolloutState::Paused | RolloutState::Halted) {
                return Ok(Err(Rejection::conflict(format!(
                    "rollout {id} is {}; only a paused or halted rollout resumes",
                    from.as_str()
                ))));
            }
            info.state = RolloutState::Running;
            // The wait starts again and earlier failures no longer count.
            info.stage_entered_at = at;
            info.counted_from = at;
            info.reason = None;
        }
        RolloutAction::Abort => {
            info.state = RolloutState::Aborted;
            info.threshold = None;
            info.reason = Some(format!("aborted by {actor}"));
            desired = true;
        }
        RolloutAction::Promote => {
            info.state = RolloutState::Finished;
            info.stage = info.plan.stages.len() - 1;
            info.threshold = Some(u64::MAX);
            info.reason = Some(format!("promoted by {actor}"));
            desired = true;
        }
    }
    update(conn, &info)?;
    audit(
        conn,
        at,
        actor,
        &format!("rollout.{}", action.as_str()),
        &id.to_string(),
        &what(&info),
    )?;
    if action == RolloutAction::Promote {
        let summary = format!(
            "rollout of {} promoted to every host by {actor}",
            what(&info)
        );
        event(&info, EventKind::RolloutFinished, Vec::new(), summary, ch);
    }
    if desired {
        bump_desired_all(conn, index, ch)?;
    }
    done(info)
}

/// Sets or clears the default rollout of package `name` (which must exist).
pub(super) fn set_package_default(
    conn: &Connection,
    name: &str,
    plan: Option<&op_proto::rollout::RolloutPlan>,
    at: DateTime<Utc>,
    actor: &str,
) -> Outcome {
    if read::packages::current_version(conn, name)?.is_none() {
        return Ok(Err(Rejection::not_found(format!(
            "no package named {name:?} (upload it first)"
        ))));
    }
    match plan {
        Some(plan) => {
            if let Err(e) = plan.check() {
                return Ok(Err(Rejection::invalid(format!("rollout: {e}"))));
            }
            conn.execute(
                "INSERT INTO package_rollouts(name, plan, set_at, set_by) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(name) DO UPDATE SET plan = ?2, set_at = ?3, set_by = ?4",
                params![name, to_json(plan), ms(at), actor],
            )?;
            audit(conn, at, actor, "package.rollout", name, &plan.describe())?;
        }
        None => {
            let removed = conn.execute("DELETE FROM package_rollouts WHERE name = ?1", [name])?;
            if removed == 0 {
                return Ok(Err(Rejection::not_found(format!(
                    "package {name:?} has no default rollout"
                ))));
            }
            audit(conn, at, actor, "package.rollout", name, "none")?;
        }
    }
    Ok(Ok(CommandResult::Done))
}
