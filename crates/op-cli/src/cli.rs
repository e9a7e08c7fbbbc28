//! Command-line declaration: every command, flag and help example lives here.

use std::ffi::OsString;

use clap::{Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  agentcli validate ll.json cycleTest.json   check task files offline
  agentcli cron '*/10 * * * * * *'           next fire times of an expression
  agentcli cron '0 30 9 * * MON-FRI *' --count 3 --tz Europe/Berlin";

/// Output format, accepted as `-o FORMAT` or the seed's `--o FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Tab-aligned table with upper-case headers (the seed's look).
    #[default]
    Table,
    /// The table with more columns.
    Wide,
    /// Only output and error (logs).
    Short,
    /// JSON for scripts.
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "agentcli",
    version,
    about = "Operate an op-agent fleet: jobs, nodes, runs and packages",
    after_help = EXAMPLES,
    propagate_version = true
)]
pub struct Cli {
    /// Output format: table, wide, short or json.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check task files offline: print each job's summary and next fire times, or every error.
    #[command(after_help = "\
Examples:
  agentcli validate ll.json
  agentcli validate jobs/*.json -o json

Exits 0 when every file is valid, 1 when any file is invalid, 2 when a file cannot be read.")]
    Validate {
        /// Task files (JSON, the seed's format).
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// Print the next fire times of a cron expression.
    #[command(after_help = "\
Forms: 7 fields `sec min hour day-of-month month day-of-week year` (the seed's),
6 fields `min hour day-of-month month day-of-week year`, 5 fields (crontab),
@yearly @monthly @weekly @daily @hourly; names, L, W, LW, #, ranges, steps, lists.

Examples:
  agentcli cron '*/10 * * * * * *'
  agentcli cron '0 0 12 L * * *' --count 12
  agentcli cron '0 30 2 * * * *' --tz America/New_York --after 2026-03-07T00:00:00Z")]
    Cron {
        /// The expression (quote it).
        expr: String,
        /// How many fire times to print.
        #[arg(short = 'n', long, default_value_t = 5)]
        count: usize,
        /// IANA time zone to evaluate in (default: this machine's local zone).
        #[arg(long)]
        tz: Option<String>,
        /// Start after this instant (RFC 3339) instead of now.
        #[arg(long)]
        after: Option<String>,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  agentcli completion bash > /etc/bash_completion.d/agentcli"
    )]
    Completion { shell: clap_complete::Shell },
}

/// Accepts the seed's `--o wide` spelling by rewriting it to `-o wide` before clap sees it.
pub fn normalize_args(args: Vec<OsString>) -> Vec<OsString> {
    args.into_iter()
        .map(|a| {
            if a == "--o" {
                OsString::from("-o")
            } else if let Some(rest) = a.to_str().and_then(|s| s.strip_prefix("--o=")) {
                OsString::from(format!("-o={rest}"))
            } else {
                a
            }
        })
        .collect()
}
