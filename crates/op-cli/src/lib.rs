//! The operator's command line.
//!
//! `cli` declares the commands (clap derive), `commands/` holds one file per command, and `output`
//! owns how results are printed: tab-aligned tables in the seed's shape, or JSON with `-o json`.
//! Exit codes follow ripgrep's convention: 0 success, 1 the command ran and found a problem,
//! 2 an error. A closed pipe (`agentcli ... | head`) is not an error.

pub mod cli;
pub mod commands;
pub mod connect;
pub mod output;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything was fine.
    Ok,
    /// The command ran and found a problem (an invalid file, a failing job, a host behind).
    Problem,
}

/// Runs agentcli with the given arguments (the first is the program name).
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = cli::normalize_args(args.into_iter().map(Into::into).collect());
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() { 2 } else { 0 };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    match commands::dispatch(cli) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Problem) => ExitCode::from(1),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("agentcli: error: {}", one_line(&err));
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes on one line: `outer: inner: root`.
fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ").replace('\n', " ")
}
