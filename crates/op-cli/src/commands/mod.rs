//! Dispatch: one file per command. Commands that talk to the manager get a [`Ctx`].

mod agent_upgrade;
mod analysis;
mod audit;
mod cluster;
mod cron;
mod download;
mod events;
mod exec;
mod fanout;
mod get;
mod holds;
mod hosts;
mod invocations;
mod job;
mod label;
mod logs;
mod notify;
mod package_analysis;
mod rollback;
mod rollout;
mod run;
mod save;
mod secret;
mod token;
mod top;
mod upload;
mod validate;
mod version;

use std::future::Future;
use std::io::Write;

use op_client::{Client, ClientError};

use crate::Outcome;
use crate::cli::{Cli, Command, Format};
use crate::connect::Conn;

/// What a manager command needs: the client, how to explain its errors, the output format.
pub struct Ctx {
    pub conn: Conn,
    pub client: Client,
    pub format: Format,
}

impl Ctx {
    /// Awaits one API call, turning its error into a line that says what to check.
    pub async fn call<T>(
        &self,
        fut: impl Future<Output = Result<T, ClientError>>,
    ) -> anyhow::Result<T> {
        fut.await.map_err(|e| self.conn.explain(e))
    }
}

pub fn dispatch(cli: Cli) -> anyhow::Result<Outcome> {
    let format = cli.output;
    let ctx = || -> anyhow::Result<Ctx> {
        let conn = Conn::resolve(&cli.conn)?;
        let client = conn.client()?;
        Ok(Ctx {
            conn,
            client,
            format,
        })
    };
    match cli.command {
        Command::Validate { files } => validate::run(&files, format),
        Command::Cron {
            expr,
            count,
            tz,
            after,
        } => cron::run(&expr, count, tz.as_deref(), after.as_deref(), format),
        Command::Completion { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            // clap_complete panics when its writer fails, so it writes to memory and a closed
            // stdout is noticed here like in every other command.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "agentcli", &mut script);
            std::io::Write::write_all(&mut crate::output::stdout(), &script)?;
            Ok(Outcome::Ok)
        }
        Command::Get(what) => {
            let ctx = ctx()?;
            crate::connect::block_on(get::run(&ctx, what))
        }
        Command::Save { files, rollout } => {
            let ctx = ctx()?;
            crate::connect::block_on(save::run_with(&ctx, &files, &rollout))
        }
        Command::Delete { job } => {
            let ctx = ctx()?;
            crate::connect::block_on(job::delete(&ctx, &job))
        }
        Command::Enable { job } => {
            let ctx = ctx()?;
            crate::connect::block_on(job::set_enabled(&ctx, &job, true))
        }
        Command::Disable { job } => {
            let ctx = ctx()?;
            crate::connect::block_on(job::set_enabled(&ctx, &job, false))
        }
        Command::Forget { node } => {
            let ctx = ctx()?;
            crate::connect::block_on(async {
                let n = ctx.call(ctx.client.get_node(&node)).await?;
                ctx.call(ctx.client.forget_node(n.node_id)).await?;
                writeln!(
                    crate::output::stdout(),
                    "node {} ({}) forgotten; its credential is revoked",
                    n.hostname,
                    n.node_id
                )?;
                Ok(crate::Outcome::Ok)
            })
        }
        Command::Events {
            follow,
            kinds,
            jobs,
            after,
        } => {
            let ctx = ctx()?;
            let query = op_client::EventQuery {
                after,
                follow,
                kinds,
                jobs,
            };
            crate::connect::block_on(events::run(&ctx, query))
        }
        Command::Logs {
            job,
            host,
            limit,
            follow,
            full,
        } => {
            let ctx = ctx()?;
            if follow {
                crate::connect::block_on(logs::follow(&ctx, &job, host))
            } else {
                crate::connect::block_on(logs::run(&ctx, &job, host, limit, full))
            }
        }
        Command::Run {
            job,
            params,
            fanout,
        } => {
            let ctx = ctx()?;
            crate::connect::block_on(run::run(&ctx, &job, &params, &fanout))
        }
        Command::Exec {
            fanout,
            timeout,
            run_as,
            command,
        } => {
            let ctx = ctx()?;
            crate::connect::block_on(exec::run(&ctx, &fanout, timeout, run_as, &command))
        }
        Command::Label { node, labels } => {
            let ctx = ctx()?;
            crate::connect::block_on(label::run(&ctx, &node, &labels))
        }
        Command::Invocations(what) => {
            let ctx = ctx()?;
            crate::connect::block_on(invocations::run(&ctx, what))
        }
        Command::Analysis(what) => {
            let ctx = ctx()?;
            crate::connect::block_on(analysis::run(&ctx, what))
        }
        Command::Upload {
            path,
            deploy_dir,
            target,
            rollout,
        } => {
            let ctx = ctx()?;
            crate::connect::block_on(upload::run(
                &ctx,
                &path,
                deploy_dir.as_deref(),
                &target,
                &rollout,
            ))
        }
        Command::Rollout(what) => {
            let ctx = ctx()?;
            crate::connect::block_on(rollout::run(&ctx, what))
        }
        Command::Download {
            name,
            version,
            out,
            force,
        } => {
            let ctx = ctx()?;
            crate::connect::block_on(download::run(&ctx, &name, version, out.as_deref(), force))
        }
        Command::Rollback { name, version } => {
            // The seed's `rollback` took no argument; ours needs the package.
            let name = name.ok_or_else(|| {
                anyhow::anyhow!(
                    "rollback needs the package: agentcli rollback NAME [VERSION], e.g. \
                     agentcli rollback test.py (see agentcli get packages)"
                )
            })?;
            let ctx = ctx()?;
            crate::connect::block_on(rollback::run(&ctx, &name, version))
        }
        Command::Top { once, interval } => {
            let ctx = ctx()?;
            crate::connect::block_on(top::run(&ctx, once, interval))
        }
        Command::Cluster { command } => {
            let ctx = ctx()?;
            let what = command.unwrap_or(crate::cli::ClusterCommand::Status);
            crate::connect::block_on(cluster::run(&ctx, what))
        }
        Command::Token(what) => {
            let ctx = ctx()?;
            crate::connect::block_on(token::run(&ctx, what))
        }
        Command::Notify(what) => {
            let ctx = ctx()?;
            crate::connect::block_on(notify::run(&ctx, what))
        }
        Command::Secret(what) => {
            let ctx = ctx()?;
            crate::connect::block_on(secret::run(&ctx, what))
        }
        Command::Audit { since, limit } => {
            let ctx = ctx()?;
            crate::connect::block_on(audit::run(&ctx, since.as_deref(), limit))
        }
        Command::Version => {
            let ctx = ctx()?;
            crate::connect::block_on(version::run(&ctx))
        }
        Command::Pause { scope, until, list } => {
            let ctx = ctx()?;
            crate::connect::block_on(holds::pause(&ctx, &scope, until.as_deref(), list))
        }
        Command::Resume { scope } => {
            let ctx = ctx()?;
            crate::connect::block_on(holds::resume(&ctx, &scope))
        }
        Command::Drain { node } => {
            let ctx = ctx()?;
            crate::connect::block_on(holds::drain(&ctx, &node, true))
        }
        Command::Undrain { node } => {
            let ctx = ctx()?;
            crate::connect::block_on(holds::drain(&ctx, &node, false))
        }
        Command::Window(what) => {
            let ctx = ctx()?;
            crate::connect::block_on(holds::window(&ctx, what))
        }
        Command::Agent(what) => {
            let ctx = ctx()?;
            crate::connect::block_on(agent_upgrade::run(&ctx, what))
        }
    }
}
