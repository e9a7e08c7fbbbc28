//! Command-line declaration: every command, flag and help example lives here.

use std::ffi::OsString;

use clap::{Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  agentcli get nodes                         every agent, Ready first
  agentcli get jobs ls-l                     one job in detail, with its next fires
  agentcli save ll.json                      save (create or update) a job
  agentcli logs ls-l ALL 3 -o wide           the last 3 runs of ls-l on every host
  agentcli analysis jobs                     jobs that failed, stalled or never ran
  agentcli top                               the fleet, live
  agentcli validate ll.json cycleTest.json   check task files offline
  agentcli cron '*/10 * * * * * *'           next fire times of an expression

Connection: --manager URL (OP_MANAGER), --token T (OP_TOKEN) or --token-file F (OP_TOKEN_FILE),
or agentcli.toml in ., ~/.config/op-agent/ or /etc/op-agent/ with `manager = \"...\"` and
`token = \"...\"` (or `token_file`). Flags beat the environment, which beats the file.

Exit codes: 0 success, 1 the command found a problem, 2 an error.";

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

    #[command(flatten)]
    pub conn: ConnArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the manager.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnArgs {
    /// Manager API URL (default http://127.0.0.1:8090).
    #[arg(long, global = true, env = "OP_MANAGER")]
    pub manager: Option<String>,
    /// API token.
    #[arg(long, global = true, env = "OP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the API token.
    #[arg(long, global = true, env = "OP_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// Config file (default: the first agentcli.toml found).
    #[arg(long, global = true, env = "OP_CLI_CONFIG")]
    pub config: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// View nodes, jobs or packages.
    #[command(subcommand)]
    Get(GetCommand),
    /// Save (create or update) jobs from task files.
    #[command(after_help = "\
Examples:
  agentcli save ll.json
  agentcli save jobs/*.json

For each file it prints the revision and the next fire times; for a once-job, its version (the
revision) and the hosts it selected, with a warning naming listed hosts that are unknown or not
Ready. Exits 1 if any file was refused.")]
    Save {
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// Delete a job: agents drop it and stop its running process.
    #[command(after_help = "Example:\n  agentcli delete cycleTest.py")]
    Delete { job: String },
    /// Enable a job.
    #[command(after_help = "Example:\n  agentcli enable cycleTest.py")]
    Enable { job: String },
    /// Disable a job: agents stop scheduling it and stop its running process.
    #[command(after_help = "Example:\n  agentcli disable cycleTest.py")]
    Disable { job: String },
    /// View the output of a job's runs: the latest LIMIT per host (default 1).
    #[command(after_help = "\
Examples:
  agentcli logs ls-l                       the latest run on every host
  agentcli logs ls-l 172.16.123.144 -o wide
  agentcli logs cycleTest.py ALL 5         the latest 5 runs per host
  agentcli logs ls-l web-01 -o short       only output and error")]
    Logs {
        job: String,
        /// A hostname or IP, or ALL (default).
        host: Option<String>,
        /// Runs per host.
        limit: Option<u32>,
    },
    /// Analyze jobs: failures, stalls, jobs that never ran, pending once-jobs.
    #[command(subcommand)]
    Analysis(AnalysisCommand),
    /// A live view of the fleet: nodes and the runs in progress.
    #[command(after_help = "\
Examples:
  agentcli top
  agentcli top --once          print one frame and exit (for scripts)")]
    Top {
        /// Print one frame and exit.
        #[arg(long)]
        once: bool,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 2)]
        interval: u64,
    },
    /// Manager cluster membership.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Manage API tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// The audit log: who changed what.
    #[command(
        after_help = "Examples:\n  agentcli audit\n  agentcli audit --since 2026-11-25T00:00:00Z --limit 50"
    )]
    Audit {
        /// Entries at or after this instant (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Print the client's and the manager's versions.
    Version,
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

#[derive(Debug, Subcommand)]
pub enum GetCommand {
    /// Agents: HOSTNAME IP STATUS VERSION FIRSTSEEN LASTSEEN (Ready first).
    #[command(after_help = "\
Examples:
  agentcli get nodes
  agentcli get nodes 192.168.1.1
  agentcli get nodes -o wide        adds labels, load, running jobs and packages")]
    Nodes {
        /// A hostname or IP to show alone.
        host: Option<String>,
    },
    /// Jobs, or one job in detail.
    #[command(after_help = "\
Examples:
  agentcli get jobs
  agentcli get jobs -o wide
  agentcli get jobs ls-l            KEYWORD VALUE view with next fires and once-job status")]
    Jobs {
        /// A job to show in detail.
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AnalysisCommand {
    /// Report problem jobs per host, then failures grouped across hosts.
    #[command(after_help = "\
Examples:
  agentcli analysis jobs
  agentcli analysis jobs ls-l
  agentcli analysis jobs ls-l 3     once-job ls-l at version (revision) 3

Exits 1 when a problem was found.")]
    Jobs {
        job: Option<String>,
        /// Once-job version (revision) to analyze; default the current one.
        #[arg(value_name = "ONCEJOBVERSION")]
        once_version: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, leader, term and applied index.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its secret (shown only once).
    #[command(after_help = "Example:\n  agentcli token create --name ci --scope operator")]
    Create {
        #[arg(long)]
        name: String,
        /// admin, operator, viewer or agent.
        #[arg(long)]
        scope: String,
        /// Expire after this many seconds.
        #[arg(long)]
        expires_in: Option<u64>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id; it stops working at once.
    Revoke { id: String },
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

#[cfg(test)]
mod tests {
    #[test]
    fn command_definition_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
