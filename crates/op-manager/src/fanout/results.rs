//! Stored invocation rows as the caller sees them: one [`HostResult`] per host (its run record's
//! exit code and output when the host answered, the reason when it did not), and the whole
//! [`InvocationView`] (its `Summary` counts are `InvocationRow::summary`, in op-store, where
//! apply derives the `invocation.finished` event with the same rule).

use op_proto::invoke::{HostResult, HostStatus, InvocationView};
use op_store::{InvocationRow, MissingHost, TargetRow};

/// A host that was reported `unreachable` when the invocation was created.
pub fn missing(m: &MissingHost) -> HostResult {
    HostResult {
        host: m.host.clone(),
        node_id: None,
        ips: Vec::new(),
        run_id: None,
        batch: 0,
        status: HostStatus::Unreachable,
        exit_code: None,
        signal: None,
        error: Some(m.reason.clone()),
        output: String::new(),
        output_truncated: false,
        started_at: None,
        ended_at: None,
        late: None,
    }
}

/// One targeted host.
pub fn host(t: &TargetRow) -> HostResult {
    let mut r = HostResult {
        host: t.hostname.clone(),
        node_id: Some(t.node_id),
        ips: t.ips.clone(),
        run_id: Some(t.run_id),
        batch: t.batch,
        status: t.status,
        exit_code: None,
        signal: None,
        error: t.detail.clone(),
        output: String::new(),
        output_truncated: false,
        started_at: None,
        ended_at: None,
        late: None,
    };
    match (&t.run, t.status) {
        // The host never answered in time (or was cancelled), and its result came after that.
        (Some(run), HostStatus::Unreachable | HostStatus::Cancelled) => {
            r.late = Some(Box::new(run.clone()));
        }
        (Some(run), _) => {
            r.exit_code = run.exit_code;
            r.signal = run.signal;
            r.error = run.error.clone();
            r.output = run.output.clone();
            r.output_truncated = run.output_truncated;
            r.started_at = run.started_at;
            r.ended_at = run.ended_at;
        }
        (None, _) => {}
    }
    r
}

/// Every host's result: the ones unreachable from the start first, then the targets in order.
pub fn hosts(row: &InvocationRow, targets: &[TargetRow]) -> Vec<HostResult> {
    row.detail
        .unreachable
        .iter()
        .map(missing)
        .chain(targets.iter().map(host))
        .collect()
}

pub fn view(row: &InvocationRow, targets: &[TargetRow]) -> InvocationView {
    InvocationView {
        invocation_id: row.id,
        job: row.job.clone(),
        kind: row.kind,
        revision: row.detail.revision,
        command: row.detail.spec.command.clone(),
        params: row.detail.params.clone(),
        options: row.detail.options.clone(),
        state: row.state,
        created_at: row.created_at,
        created_by: row.created_by.clone(),
        finished_at: row.finished_at,
        hosts: hosts(row, targets),
        summary: row.summary(targets),
        retry_of: row.detail.retry_of,
    }
}
