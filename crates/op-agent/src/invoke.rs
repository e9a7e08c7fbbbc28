//! Invoking a job by name with parameters (DESIGN.md section 5.4), for both HTTP entry points.
//!
//! Any enabled job that selects this host can be invoked, whatever its kind (API-only, cron or
//! once); an invocation is an explicit request, so it is not subject to the concurrency policy
//! and does not touch the once-job ledger. Parameters go through `op_proto::params::substitute`:
//! each `{name}` becomes a reference to `OP_PARAM_NAME` that fits its quoting context, so a
//! value is always one literal word. A missing or undeclared parameter refuses the call before
//! anything runs.

use std::collections::BTreeMap;

use op_proto::Trigger;
use op_proto::params::{self, ParamError};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::executor::{Executor, RunHandle, RunRequest};
use crate::jobs::JobTable;

/// Why an invocation was refused.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("job {0:?} is not known to this agent")]
    NotFound(String),
    #[error("job {name:?} cannot be invoked: {reason}")]
    Inactive { name: String, reason: &'static str },
    #[error("{0}")]
    Params(#[from] ParamError),
    #[error("the agent is shutting down and starts no new runs")]
    ShuttingDown,
}

/// What the API needs to start runs.
#[derive(Clone)]
pub struct Invoker {
    pub table: JobTable,
    pub executor: Executor,
    /// Cancelled when shutdown begins: no new runs from then on.
    pub closing: CancellationToken,
}

/// A started invocation and whether the job asks callers to wait by default (SynFlag).
pub struct Invoked {
    pub handle: RunHandle,
    pub syn_flag: bool,
}

impl Invoker {
    pub fn invoke(
        &self,
        name: &str,
        values: BTreeMap<String, String>,
    ) -> Result<Invoked, InvokeError> {
        if self.closing.is_cancelled() {
            return Err(InvokeError::ShuttingDown);
        }
        let job = self
            .table
            .get(name)
            .ok_or_else(|| InvokeError::NotFound(name.to_string()))?;
        if !job.spec.enabled {
            return Err(InvokeError::Inactive {
                name: name.to_string(),
                reason: "it is disabled (Enabled: 0)",
            });
        }
        if !job.selected {
            return Err(InvokeError::Inactive {
                name: name.to_string(),
                reason: "its host selection excludes this host",
            });
        }
        let substituted = params::substitute(&job.spec.command, &job.spec.params, &values)?;
        let req = RunRequest {
            run_id: Uuid::now_v7(),
            revision: job.revision,
            trigger: Trigger::Api,
            attempt: 0,
            invocation_id: None,
            params: values,
            command: substituted.command,
            param_env: substituted.env,
            planned_at: None,
            start_at: None,
            once: false,
            spec: job.spec.clone(),
        };
        let syn_flag = job.spec.syn_flag;
        Ok(Invoked {
            handle: self.executor.start(req),
            syn_flag,
        })
    }
}
