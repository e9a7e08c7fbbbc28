//! Dispatch: one file per command.

mod cron;
mod validate;

use crate::Outcome;
use crate::cli::{Cli, Command};

pub fn dispatch(cli: Cli) -> anyhow::Result<Outcome> {
    let format = cli.output;
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
            clap_complete::generate(shell, &mut cmd, "agentcli", &mut std::io::stdout());
            Ok(Outcome::Ok)
        }
    }
}
