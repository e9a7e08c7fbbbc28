//! `agentcli exec [selection and rollout flags] -- COMMAND...`: run an ad-hoc command now on many
//! hosts and print each host's result as it arrives.

use super::{Ctx, fanout};
use crate::Outcome;
use crate::cli::FanoutArgs;

pub async fn run(
    ctx: &Ctx,
    args: &FanoutArgs,
    timeout: Option<u64>,
    run_as: Option<String>,
    command: &[String],
) -> anyhow::Result<Outcome> {
    let mut req = fanout::request(args)?;
    if !req.has_selection() {
        anyhow::bail!("choose the hosts: --host H, --label K=V or --all");
    }
    // The words are joined like ssh joins them: `exec -- ls -l /tmp` runs `ls -l /tmp`.
    req.command = Some(command.join(" "));
    req.timeout = timeout;
    req.run_as = run_as;
    let started = ctx.call(ctx.client.exec(&req)).await?;
    fanout::follow(ctx, started, args).await
}
