//! `agentcli run JOB [--param K=V]... [selection and rollout flags]`: run a saved job now on many
//! hosts and print each host's result as it arrives.

use super::{Ctx, fanout};
use crate::Outcome;
use crate::cli::FanoutArgs;

pub async fn run(
    ctx: &Ctx,
    job: &str,
    params: &[String],
    args: &FanoutArgs,
) -> anyhow::Result<Outcome> {
    let mut req = fanout::request(args)?;
    for p in params {
        let (k, v) = fanout::key_value(p, "--param")?;
        if req.params.insert(k.clone(), v).is_some() {
            anyhow::bail!("--param {k} is given twice");
        }
    }
    let started = ctx.call(ctx.client.run_job(job, &req)).await?;
    fanout::follow(ctx, started, args).await
}
