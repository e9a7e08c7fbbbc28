//! `JudgeFires` (issue 20): the leader's verdicts on job fires. Each fire is kept as the job's
//! latest judged fires (the [`KEPT_FIRES`] newest, in `meta` under `judged_fires/JOB`, so no
//! table and no row per host), and the whole command feeds the incident state, which turns the
//! problems into `run.missed` / `run.late` / `run.skipped` / `run.overrunning` events.

use chrono::{DateTime, Utc};
use op_proto::incidents::{FiresJudged, Input};
use op_proto::judged::{JudgedFire, KEPT_FIRES, OverrunningRun, SkewedHost};
use rusqlite::Connection;

use super::{Changes, Outcome};
use crate::codec::{from_json, to_json};
use crate::command::CommandResult;
use crate::{read, set_meta};

/// The `meta` key of a job's judged fires.
pub(crate) fn key(job: &str) -> String {
    format!("judged_fires/{job}")
}

pub(super) fn judge(
    conn: &Connection,
    at: DateTime<Utc>,
    fires: &[JudgedFire],
    overrunning: &[OverrunningRun],
    skewed: &Option<Vec<SkewedHost>>,
    ch: &mut Changes,
) -> Outcome {
    for fire in fires {
        // A job removed since the leader judged keeps nothing.
        if !matches!(read::jobs::load(conn, &fire.job)?, Some((_, false))) {
            continue;
        }
        let key = key(&fire.job);
        let mut kept: Vec<JudgedFire> = match read::meta(conn, &key)? {
            Some(text) => from_json("judged fires", &text)?,
            None => Vec::new(),
        };
        kept.retain(|f| f.fire != fire.fire);
        kept.push(fire.clone());
        kept.sort_by_key(|f| std::cmp::Reverse(f.fire));
        kept.truncate(KEPT_FIRES);
        set_meta(conn, &key, &to_json(&kept))?;
    }
    ch.inputs.push(Input::FiresJudged(FiresJudged {
        time: at,
        fires: fires.to_vec(),
        overrunning: overrunning.to_vec(),
        skewed: skewed.clone(),
    }));
    Ok(Ok(CommandResult::Done))
}

/// Drops a removed job's judged fires.
pub(super) fn forget(conn: &Connection, job: &str) -> crate::Result<()> {
    conn.execute("DELETE FROM meta WHERE key = ?1", [key(job)])?;
    Ok(())
}
