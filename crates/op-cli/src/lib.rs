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
    exit_code(commands::dispatch(cli), output::stdout_closed())
}

/// The exit code of a command's result. A failure ends quietly with 0 only when stdout's reader
/// went away (`agentcli ... | head`); any other failure, a broken pipe to the manager included,
/// is reported and exits 2.
fn exit_code(result: anyhow::Result<Outcome>, stdout_closed: bool) -> ExitCode {
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Problem) => ExitCode::from(1),
        Err(_) if stdout_closed => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("agentcli: error: {}", one_line(&err));
            ExitCode::from(2)
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A TLS refusal can surface as a broken pipe while sending the request; that is a network
    /// error, not a closed stdout, and must not exit 0.
    #[test]
    fn a_broken_pipe_to_the_manager_is_an_error() {
        let network = || {
            Err(
                anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
                    .context("error sending request"),
            )
        };
        assert_eq!(exit_code(network(), false), ExitCode::from(2));
        assert_eq!(exit_code(network(), true), ExitCode::SUCCESS);
    }
}
