//! `agentcli`: parse the command line, run the command, map the outcome to an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    op_cli::main_with_args(std::env::args_os())
}
