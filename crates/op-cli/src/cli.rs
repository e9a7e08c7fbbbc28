//! Command-line declaration: every command, flag and help example lives here.

use std::ffi::OsString;

use clap::{Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  agentcli get nodes                         every agent, Ready first
  agentcli get jobs ls-l                     one job in detail, with its next fires
  agentcli save ll.json                      save (create or update) a job
  agentcli upload python_project /data/op-agent/src
                                             push a directory to every agent as a .tar.gz
  agentcli get packages                      every package at its current version
  agentcli analysis packages                 hosts not on the current version, and why
  agentcli rollback test.py                  every agent goes back to the previous version
  agentcli exec --all -- ls -l /tmp          run a command on every host, see each answer
  agentcli run apiTest.py --host web-01 --param host=10.0.0.7
  agentcli logs ls-l ALL 3 -o wide           the last 3 runs of ls-l on every host
  agentcli analysis jobs                     jobs that failed, stalled or never ran
  agentcli top                               the fleet, live
  agentcli validate ll.json cycleTest.json   check task files offline
  agentcli cron '*/10 * * * * * *'           next fire times of an expression

Connection: --manager URL (OP_MANAGER), --token T (OP_TOKEN) or --token-file F (OP_TOKEN_FILE),
or agentcli.toml in ., ~/.config/op-agent/ or /etc/op-agent/ with `manager = \"...\"` and
`token = \"...\"` (or `token_file`). Flags beat the environment, which beats the file.

Exit codes: 0 success, 1 the command found a problem, 2 an error.";

/// The heading of the flags every command takes, so a command's help lists its own flags first.
const GLOBAL: &str = "Global options";

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
    bin_name = "agentcli",
    version,
    about = "Operate an op-agent fleet: jobs, nodes, runs and packages",
    after_help = EXAMPLES,
    disable_version_flag = true
)]
pub struct Cli {
    /// Print the version (-v as in the seed, or -V).
    #[arg(short = 'V', long = "version", short_alias = 'v', action = clap::ArgAction::Version)]
    version: Option<bool>,

    /// Output format: table, wide, short or json.
    #[arg(short = 'o', long = "output", global = true, value_enum,
          default_value_t = Format::Table, help_heading = GLOBAL)]
    pub output: Format,

    #[command(flatten)]
    pub conn: ConnArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the manager. Each flag has an environment variable, read in `connect` rather
/// than by clap: clap prints a value taken from the environment in usage lines as if it were a
/// required flag (`Usage: agentcli run --token <TOKEN> <JOB>`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnArgs {
    /// Manager API URL (default http://127.0.0.1:8090) [env: OP_MANAGER].
    #[arg(long, global = true, value_name = "URL", help_heading = GLOBAL)]
    pub manager: Option<String>,
    /// API token [env: OP_TOKEN].
    #[arg(long, global = true, value_name = "TOKEN", help_heading = GLOBAL)]
    pub token: Option<String>,
    /// A file holding the API token [env: OP_TOKEN_FILE].
    #[arg(long, global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub token_file: Option<std::path::PathBuf>,
    /// Config file (default: the first agentcli.toml found) [env: OP_CLI_CONFIG].
    #[arg(long, global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub config: Option<std::path::PathBuf>,
    /// PEM CA that signs the manager's certificate (for an https:// manager) [env: OP_CA].
    #[arg(long, global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub ca: Option<std::path::PathBuf>,
    /// PEM client certificate, for a manager that requires one (mutual TLS) [env: OP_CERT].
    #[arg(long, global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub cert: Option<std::path::PathBuf>,
    /// PEM key of --cert [env: OP_KEY].
    #[arg(long, global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub key: Option<std::path::PathBuf>,
    /// Read from the manager asked, even if it lags the leader (default: linearizable reads,
    /// which see every change acknowledged before the command started) [env: OP_STALE=1].
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub stale: bool,
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
        #[command(flatten)]
        rollout: RolloutArgs,
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
    /// Forget a node (by hostname, IP or id): it is listed as Left and its credential is revoked,
    /// so its agent must enroll again to come back.
    #[command(after_help = "Example:\n  agentcli forget web-07")]
    Forget { node: String },
    /// Set or remove manager labels of a node (by hostname, IP or id): merged over the agent's
    /// own labels (the manager's value wins), kept across agent restarts, and used at once by
    /// every host selection (jobs' Labels, --label of run and exec).
    #[command(after_help = "\
Examples:
  agentcli label web-01 tier=gold zone=eu-1     set (or change) two manager labels
  agentcli label web-01 tier-                   remove the manager label tier

`get nodes -o wide` marks manager labels with a `*`; `get nodes NAME -o json` lists them under
`manager_labels`. An agent's own labels change only in its config.")]
    Label {
        node: String,
        /// `KEY=VALUE` to set, `KEY-` to remove.
        #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
        labels: Vec<String>,
    },
    /// View the output of a job's runs: the latest LIMIT per host (default 1).
    #[command(after_help = "\
Examples:
  agentcli logs ls-l                       the latest run on every host
  agentcli logs ls-l 172.16.123.144 -o wide
  agentcli logs cycleTest.py ALL 5         the latest 5 runs per host
  agentcli logs ls-l web-01 -o short       only output and error
  agentcli logs backup.sh --full           the whole output, fetched from the host
  agentcli logs backup.sh web-01 --follow  stream a running run's output until it ends

--full fetches the whole output from the agent when the stored tail was truncated. --follow
streams the output of the job's running runs (waiting for the next one to start if none is
running) and exits when they end: 0 when every run succeeded, 1 otherwise.")]
    Logs {
        job: String,
        /// A hostname or IP, or ALL (default).
        host: Option<String>,
        /// Runs per host.
        limit: Option<u32>,
        /// Stream the output of a running run until it ends.
        #[arg(long, short = 'f', conflicts_with = "full")]
        follow: bool,
        /// Fetch the whole output from the agent when the stored tail was truncated.
        #[arg(long)]
        full: bool,
    },
    /// What the fleet reported: failures grouped across hosts, recoveries, nodes going down or
    /// coming back, oldest first.
    #[command(after_help = "\
Examples:
  agentcli events
  agentcli events --kind run.failed --kind run.recovered --job backup.sh
  agentcli events --follow -o json          one JSON object per line, as they happen

Kinds: run.failed, run.recovered, node.not_ready, node.ready, package.failed,
invocation.finished. With -o json each event is one line of JSON (NDJSON).")]
    Events {
        /// Keep printing new events as they happen.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only events of this kind (repeatable).
        #[arg(long = "kind", value_name = "KIND")]
        kinds: Vec<String>,
        /// Only events about this job (repeatable).
        #[arg(long = "job", value_name = "JOB")]
        jobs: Vec<String>,
        /// Only events after this id (resume where a previous call stopped).
        #[arg(long, default_value_t = 0, value_name = "ID")]
        after: u64,
    },
    /// Run a saved job now on the selected hosts and print each host's result as it arrives.
    #[command(after_help = "\
Examples:
  agentcli run apiTest.py --host 192.168.1.1 --param host=10.0.0.7 --param port=3306
  agentcli run backup.sh --label role=db --batch 25% --max-failures 1
  agentcli run deploy.sh --host 'web-*' --batch 2 --batch-wait 30
  agentcli run report.py --async            print the invocation id and return

Without --host, --label or --all the job's own WhiteHosts/BlackHosts/Labels select the hosts.
Parameters are checked against the job before anything runs, and reach the command as one literal
word each, whatever they contain. Hosts that are unknown, not Ready or silent past --deadline are
reported unreachable. Exits 0 when every host succeeded, 1 when any failed or was unreachable.")]
    Run {
        job: String,
        /// A parameter NAME=VALUE of the job (repeatable).
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
        #[command(flatten)]
        fanout: FanoutArgs,
    },
    /// Run a command now on the selected hosts (an ad-hoc job) and print each host's result.
    #[command(after_help = "\
Examples:
  agentcli exec --all -- ls -l /tmp
  agentcli exec --host web-01 --host 10.0.0.7 -- 'df -h | grep data'
  agentcli exec --label role=db --timeout 60 --max-concurrency 5 -- systemctl restart mysqld
  agentcli exec --all -o json -- uptime     one JSON event per line (NDJSON)

The words after -- are joined with spaces and run as `bash -c COMMAND` on every host; quote
pipes and redirections so the local shell leaves them alone. The run is recorded under the job
name `adhoc` (agentcli logs adhoc) and in the audit log. Exits 0 when every host succeeded, 1
when any failed or was unreachable.")]
    Exec {
        #[command(flatten)]
        fanout: FanoutArgs,
        /// Kill the command after this long (seconds, or 30s, 5m, 1h).
        #[arg(long, value_name = "DURATION", value_parser = seconds)]
        timeout: Option<u64>,
        /// Run the command as this user.
        #[arg(long, value_name = "USER")]
        run_as: Option<String>,
        /// The command, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Invocations of run and exec: progress and every host's result.
    #[command(subcommand)]
    Invocations(InvocationsCommand),
    /// Analyze jobs (failures, stalls, jobs that never ran) or packages (hosts behind).
    #[command(subcommand)]
    Analysis(AnalysisCommand),
    /// Upload a file, or a directory as NAME.tar.gz, as a new version of a package.
    #[command(after_help = "\
Examples:
  agentcli upload test.py /data/op-agent/src       agents deploy /data/op-agent/src/test.py (0755)
  agentcli upload ./python_project_dir             agents unpack python_project_dir.tar.gz
  agentcli upload test.py                          keep the package's last deploy dir
  agentcli upload schema.sql --label role=db       only the hosts labelled role=db
  agentcli upload tool --host 'web-*' --exclude web-3

The package name is the file's name, or DIR's name + .tar.gz (streamed, no file is written). A
.tar.gz, .tgz or .tar.zst is unpacked by the agents into DEPLOYDIR; anything else lands as
DEPLOYDIR/NAME. Without DEPLOYDIR the package keeps the deploy dir of its last version, or the
agents' own default for a new package. Pass \"\" for the agents' default explicitly.
--host, --exclude and --label target this version (a job's WhiteHosts, BlackHosts and Labels
grammar); without them it goes to every host, whatever the previous version had. A host that
stops being targeted keeps the files it has and stops reporting the package.
Every agent switches to the new version atomically; `agentcli analysis packages` shows progress.")]
    Upload {
        /// A file, or a directory to pack as NAME.tar.gz.
        path: std::path::PathBuf,
        /// Absolute directory on the agents.
        deploy_dir: Option<String>,
        #[command(flatten)]
        target: UploadTargetArgs,
        #[command(flatten)]
        rollout: RolloutArgs,
    },
    /// Staged rollouts of package versions and job revisions: list, status, pause, resume,
    /// abort, promote.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Download a package version (default: the current one), checked against its sha256.
    #[command(after_help = "\
Examples:
  agentcli download test.py                        ./test.py, the current version
  agentcli download test.py 1730000000             that version
  agentcli download test.py -o /tmp/test.py        (also --out; -o json etc. stay formats)
  agentcli download test.py --force                replace an existing ./test.py

An existing file is not replaced without --force.")]
    Download {
        name: String,
        /// The version [default: the current one].
        #[arg(id = "package_version", value_name = "VERSION")]
        version: Option<u64>,
        /// Where to write it [default: ./NAME].
        #[arg(long = "out", value_name = "FILE")]
        out: Option<std::path::PathBuf>,
        /// Overwrite the file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Make an older (or any stored) version current again; every agent switches back.
    #[command(after_help = "\
Examples:
  agentcli rollback test.py                 the version before the current one
  agentcli rollback test.py 1730000000      that version")]
    Rollback {
        /// The package (required; optional only to answer the seed's bare `rollback` with a hint).
        name: Option<String>,
        /// The version to make current [default: the one before the current].
        #[arg(id = "package_version", value_name = "VERSION")]
        version: Option<u64>,
    },
    /// A live view of the fleet: nodes and the runs in progress.
    #[command(after_help = "\
Examples:
  agentcli top
  agentcli top --once          print one frame and exit (for scripts)")]
    Top {
        /// Print one frame and exit.
        #[arg(long)]
        once: bool,
        /// Time between refreshes (seconds, or 500ms, 5s).
        #[arg(long, default_value = "2", value_name = "DURATION", value_parser = op_proto::units::parse_duration)]
        interval: std::time::Duration,
    },
    /// Manager cluster membership (alone: `cluster status`).
    Cluster {
        #[command(subcommand)]
        command: Option<ClusterCommand>,
    },
    /// Manage API tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Notification rules: which events go where (changes need an admin token).
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// Secrets for jobs' Env ("DB_PW": "secret:db/pw"): set and remove (admin), list names
    /// (operator). Values are never shown.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// The audit log: who changed what.
    #[command(
        after_help = "Examples:\n  agentcli audit\n  agentcli audit --since 1h\n  agentcli audit --since 2026-11-25T00:00:00Z --limit 50"
    )]
    Audit {
        /// Entries at or after this instant (RFC 3339), or this long ago (1h, 30m, 7d).
        #[arg(long, value_name = "TIME|DURATION")]
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
    /// Pause scheduled fires of the whole fleet, a job or the hosts with a label: its fires are
    /// recorded `skipped` with the reason (`paused by WHO until TIME`). Unlike `disable`, the
    /// job stays and running processes are not touched. `--list` shows the pauses.
    #[command(after_help = "\
Examples:
  agentcli pause --label role=db --until 2h        the db hosts run nothing for two hours
  agentcli pause --job backup.sh                   until `agentcli resume --job backup.sh`
  agentcli pause --all --until 2026-12-24T06:00:00Z
  agentcli pause --list

--until takes an instant (RFC 3339) or a duration from now (30m, 2h); it ends by itself then
(judged on each agent's clock). Pausing the same scope again replaces its --until.")]
    Pause {
        #[command(flatten)]
        scope: HoldScopeArgs,
        /// End the pause by itself at this instant (RFC 3339) or after this long (30m, 2h).
        #[arg(long, value_name = "TIME|DURATION")]
        until: Option<String>,
        /// List the pauses instead.
        #[arg(long, conflicts_with_all = ["all", "job", "label", "until"])]
        list: bool,
    },
    /// End a pause (the one with exactly this scope).
    #[command(after_help = "\
Examples:
  agentcli resume --label role=db
  agentcli resume --all")]
    Resume {
        #[command(flatten)]
        scope: HoldScopeArgs,
    },
    /// Drain a node (by hostname, IP or id): no new runs of any job start on it (fires are
    /// recorded `skipped`, reason `node draining`; run and exec report it not run); running
    /// ones finish. `get nodes` shows it `Draining` until `undrain`.
    #[command(after_help = "Example:\n  agentcli drain web-07")]
    Drain { node: String },
    /// End a node's drain.
    #[command(after_help = "Example:\n  agentcli undrain web-07")]
    Undrain { node: String },
    /// Maintenance windows: from each fire of a cron schedule (UTC) for a duration, matching
    /// jobs do not fire (recorded `skipped`, reason `maintenance window NAME`).
    #[command(subcommand)]
    Window(WindowCommand),
    /// The agents themselves: self-upgrade and pins (docs/operations.md, "Upgrade").
    #[command(subcommand)]
    Agent(AgentCommand),
}

/// `agentcli agent ...` (issue 22).
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Agent releases: upload a new agent binary for every agent to upgrade to, and follow it.
    #[command(subcommand)]
    Upgrade(UpgradeCommand),
    /// Keep hosts on an agent version (a node by hostname, IP or id, or every host with a label).
    #[command(
        after_help = "Examples:\n  agentcli agent pin web-07 0.1.0\n  agentcli agent pin --label role=db 0.1.0"
    )]
    Pin {
        /// NODE VERSION, or VERSION alone with --label.
        #[arg(required = true, num_args = 1..=2, value_name = "NODE VERSION")]
        args: Vec<String>,
        /// Every host with this label (k=v).
        #[arg(long, value_name = "K=V")]
        label: Option<String>,
    },
    /// Remove a pin.
    #[command(
        after_help = "Examples:\n  agentcli agent unpin web-07\n  agentcli agent unpin --label role=db"
    )]
    Unpin {
        #[arg(required_unless_present = "label")]
        node: Option<String>,
        #[arg(long, value_name = "K=V", conflicts_with = "node")]
        label: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {
    /// Upload BINARY as the agent release of a platform: every agent (not pinned) downloads it,
    /// verifies it, and restarts on it through its guard, which restores the previous binary if
    /// the new one does not reach a manager within the deadline.
    #[command(
        after_help = "Examples:\n  agentcli agent upgrade start ./op-agent --version 0.2.0\n  agentcli agent upgrade start ./op-agent --version 0.2.0 --deadline 5m --rollout 1,10%,100% --step-wait 5m\n  agentcli agent upgrade start ./op-agent-0.1.9 --version 0.1.9 --force"
    )]
    Start {
        /// The op-agent executable.
        binary: std::path::PathBuf,
        /// The version the binary reports (`op-agent --version`).
        #[arg(long)]
        version: String,
        /// The platform it is for, OS-ARCH [default: this machine's, e.g. linux-x86_64].
        #[arg(long)]
        platform: Option<String>,
        /// Rollout stages (counts or percentages) [default: 1,10%,100%].
        #[arg(long, value_name = "STAGES")]
        rollout: Option<String>,
        /// Wait between stages.
        #[arg(long, value_name = "DURATION")]
        step_wait: Option<String>,
        /// Failures (a count or a percentage) that halt the rollout.
        #[arg(long, value_name = "N|P%")]
        halt_on: Option<String>,
        /// On halt, return every admitted host to the previous version.
        #[arg(long)]
        auto_rollback: bool,
        /// How long a new agent has to reach a manager before its guard restores the previous
        /// binary [default: 2m].
        #[arg(long, value_name = "DURATION")]
        deadline: Option<String>,
        /// Allow a version older than the newest one an agent runs.
        #[arg(long)]
        force: bool,
    },
    /// The current release, the pins, and each host's agent version and upgrade state.
    #[command(
        after_help = "Examples:\n  agentcli agent upgrade status\n  agentcli agent upgrade status -o json"
    )]
    Status,
}

/// What a pause covers: exactly one of these.
#[derive(Debug, Clone, clap::Args)]
pub struct HoldScopeArgs {
    /// Every job on every host.
    #[arg(long)]
    pub all: bool,
    /// One job (on every host it runs on).
    #[arg(long, value_name = "JOB")]
    pub job: Option<String>,
    /// Every job on the hosts with this label.
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum WindowCommand {
    /// Create or replace a window. Without --job or --label it covers every job.
    #[command(after_help = "\
Examples:
  agentcli window add nightly-db --cron '0 0 2 * * * *' --duration 1h --label role=db
  agentcli window add sunday --cron '0 0 0 * * 0 *' --duration 6h --job backup.sh

The schedule is read in UTC, in any form `agentcli cron` takes. A schedule that never fires
again, or a zero duration, is refused.")]
    Add {
        name: String,
        /// When the window opens (cron, UTC).
        #[arg(long, value_name = "EXPR")]
        cron: String,
        /// How long it stays open (30m, 2h; seconds when a bare number).
        #[arg(long, value_name = "DURATION")]
        duration: String,
        /// Only this job.
        #[arg(long, value_name = "JOB", conflicts_with = "label")]
        job: Option<String>,
        /// Only jobs on the hosts with this label.
        #[arg(long, value_name = "KEY=VALUE")]
        label: Option<String>,
    },
    /// List windows: name, schedule, duration, scope, next opening.
    List,
    /// Remove a window.
    #[command(visible_alias = "rm")]
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum GetCommand {
    /// Agents: HOSTNAME IP STATUS VERSION FIRSTSEEN LASTSEEN (Ready first).
    #[command(
        after_help = "\
Examples:
  agentcli get nodes
  agentcli get nodes 192.168.1.1
  agentcli get nodes -o wide        adds labels, load, running jobs, packages and facts
  agentcli get node web-01          one node in detail (its facts in -o json)",
        visible_alias = "node"
    )]
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
    /// Packages at their current version: PACKAGENAME PACKAGEVERSION TIMESTAMP DEPLOYDIR.
    #[command(after_help = "\
Examples:
  agentcli get packages
  agentcli get packages test.py     every version of test.py, oldest first
  agentcli get packages -o wide     adds CURRENT, SIZE, SHA256 and UPLOADER")]
    Packages {
        /// A package to list every version of.
        name: Option<String>,
    },
}

/// The hosts a package version goes to (`upload`); none = every host.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UploadTargetArgs {
    /// Only this host: hostname, IP, CIDR, glob like 'web-*', label.KEY=VALUE or fact.KEY=VALUE,
    /// fact.KEY>=N, fact.KEY<=N (repeatable; any of them matches).
    #[arg(long = "host", short = 'H', value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Never this host, same grammar as --host (repeatable).
    #[arg(long = "exclude", value_name = "HOST")]
    pub exclude: Vec<String>,
    /// Only hosts with this label KEY=VALUE (repeatable; all of them must match).
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
}

/// Host selection and rollout options shared by `run` and `exec`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FanoutArgs {
    /// A host: hostname, IP, CIDR, glob like 'web-*', label.KEY=VALUE or fact.KEY=VALUE,
    /// fact.KEY>=N, fact.KEY<=N (repeatable).
    #[arg(long = "host", short = 'H', value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Every Ready host (narrowed by --label and --exclude).
    #[arg(long)]
    pub all: bool,
    /// Only hosts with this label KEY=VALUE (repeatable).
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Never this host: hostname, IP, CIDR, glob, label.KEY=VALUE or a fact. selector (repeatable).
    #[arg(long = "exclude", alias = "black", value_name = "HOST")]
    pub exclude: Vec<String>,
    /// Print each host's result as it arrives (the default for exec; for run, the job's SynFlag).
    #[arg(long, conflicts_with = "async_")]
    pub wait: bool,
    /// Return at once with the invocation id (follow it with `agentcli invocations get ID`).
    #[arg(long = "async", id = "async_")]
    pub async_: bool,
    /// Rolling batches: hosts per batch, a number or a percentage like 10%.
    #[arg(long, value_name = "N|N%")]
    pub batch: Option<String>,
    /// Time to wait between the end of a batch and the start of the next (seconds, or 30s, 5m).
    #[arg(long, value_name = "DURATION", value_parser = seconds)]
    pub batch_wait: Option<u64>,
    /// Stop starting hosts once this many have failed.
    #[arg(long, value_name = "N")]
    pub max_failures: Option<u32>,
    /// Most hosts running at once.
    #[arg(long, value_name = "N")]
    pub max_concurrency: Option<u32>,
    /// Time each host has to answer before it is reported unreachable (seconds, or 90s, 10m)
    /// [default: 60 s + the job's Timeout].
    #[arg(long, value_name = "DURATION", value_parser = seconds)]
    pub deadline: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum InvocationsCommand {
    /// One invocation: its state, options and every host's result.
    #[command(
        after_help = "Example:\n  agentcli invocations get 0193b6a2-7c1e-7d3a-9f00-5a1b2c3d4e5f"
    )]
    Get { id: String },
    /// Recent invocations, newest first.
    #[command(
        after_help = "Examples:\n  agentcli invocations list\n  agentcli invocations list --job backup.sh --limit 10"
    )]
    List {
        /// Only invocations of this job (`adhoc` for exec).
        #[arg(long)]
        job: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Cancel an invocation: hosts not started are skipped, running ones are killed.
    #[command(
        after_help = "Example:\n  agentcli invocations cancel 0193b6a2-7c1e-7d3a-9f00-5a1b2c3d4e5f"
    )]
    Cancel { id: String },
    /// Run a finished invocation again on the hosts that did not succeed, as a new invocation.
    #[command(after_help = "\
Examples:
  agentcli invocations retry 0193b6a2-7c1e-7d3a-9f00-5a1b2c3d4e5f             every host not ok
  agentcli invocations retry 0193b6a2-7c1e-7d3a-9f00-5a1b2c3d4e5f --failed    exit status not 0
  agentcli invocations retry 0193b6a2-7c1e-7d3a-9f00-5a1b2c3d4e5f --unreachable --unresponsive

Same job (same revision) or command, parameters and rollout options. Without a flag every host
that did not succeed runs again (failed, timeout, killed, skipped, lost, unreachable,
unresponsive; not cancelled). The new invocation shows `RETRY OF` the old one.")]
    Retry {
        id: String,
        /// Hosts whose command ended with a non-zero exit status.
        #[arg(long)]
        failed: bool,
        /// Hosts that were not connected or Ready, or gave no result within the deadline.
        #[arg(long)]
        unreachable: bool,
        /// Hosts whose agent did not acknowledge the directive.
        #[arg(long)]
        unresponsive: bool,
        /// Return the new invocation id at once instead of waiting for the results.
        #[arg(long = "async")]
        async_: bool,
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
    /// Every host not on the current version of every package, with the reason.
    #[command(after_help = "\
Examples:
  agentcli analysis packages
  agentcli analysis packages test.py

Reasons: downloading, failed: REASON, missing, outdated (the host has another version and has
not started on the current one yet). Then one line per package:
  test.py 1730000000: 48/50 hosts current, 1 failed, 1 downloading, from peers: 82.5 %
(from peers: the share of the version's bytes the hosts fetched from peer agents). Peers that
failed a host are listed as bad sources; with NAME, each host's bytes from peers and managers.
Exits 1 when any host is behind.")]
    Packages {
        /// Only this package.
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, leader, term, commit/applied/snapshot indexes and each member's lag.
    Status,
    /// Add a running manager that holds this cluster's identity (`op-manager --join` does this
    /// itself); it catches up as a learner, then becomes a voter.
    #[command(
        after_help = "Example:\n  agentcli cluster add 4 --api http://10.0.0.4:8090 --raft http://10.0.0.4:8091"
    )]
    Add {
        /// Its raft node id.
        id: u64,
        /// Its API URL.
        #[arg(long)]
        api: String,
        /// Its raft URL.
        #[arg(long)]
        raft: String,
    },
    /// Remove a manager from the cluster (the leader too: it hands over first). Stop it
    /// afterwards.
    #[command(after_help = "Example:\n  agentcli cluster remove 3")]
    Remove {
        /// Its raft node id (see `cluster status`).
        id: u64,
    },
    /// Hand leadership to another voter (default: the most up-to-date one).
    #[command(
        name = "transfer-leader",
        after_help = "Example:\n  agentcli cluster transfer-leader 2"
    )]
    TransferLeader {
        /// The voter to lead.
        to: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its secret (shown only once).
    #[command(
        after_help = "Examples:\n  agentcli token create --name ci --scope operator\n  agentcli token create --name tmp --scope viewer --expires-in 30d\n  agentcli token create --name team-a --scope operator --job 'team-a-*' --host 'node-1' --verbs read,save,run,exec\n\nWith --job, --host or --verbs the token carries a policy (docs/security.md): it sees and acts\non the jobs matching a --job glob only, targets the hosts matching a --host selector only, and\nmay do the listed verbs only (default: all but secrets and tokens). A policy never grants more\nthan the scope. Verbs: read, save, delete, run, exec, upload, rollback, rollout, pause, label,\nnotify, upgrade, secrets, tokens."
    )]
    Create {
        #[arg(long)]
        name: String,
        /// admin, operator, viewer or agent.
        #[arg(long)]
        scope: String,
        /// Expire after this long (seconds, or 12h, 30d, 2w).
        #[arg(long, value_name = "DURATION", value_parser = seconds)]
        expires_in: Option<u64>,
        /// Policy: a job name glob the token may see and act on (repeatable).
        #[arg(long = "job", value_name = "GLOB")]
        jobs: Vec<String>,
        /// Policy: a host selector the token may target (repeatable; the WhiteHosts grammar).
        #[arg(long = "host", value_name = "SELECTOR")]
        hosts: Vec<String>,
        /// Policy: the verbs it may do, comma-separated.
        #[arg(long, value_name = "V,V", value_delimiter = ',')]
        verbs: Vec<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id; it stops working at once.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Save a rule (or replace the one of that name): a filter and one channel.
    #[command(after_help = "\
Examples:
  agentcli notify add ops --webhook https://hooks.example.com/op --kind run.failed --job 'backup*'
  agentcli notify add db-half --webhook https://hooks.example.com/op --label role=db --min-hosts 50%
  agentcli notify add slack --webhook https://hooks.slack.com/services/T0/B0/X --template slack.j2
  agentcli notify add am --alertmanager http://alertmanager:9093 --kind node.not_ready
  agentcli notify add mail --email ops@example.com --smtp mail.example.com:587 \\
      --smtp-user op --smtp-password-file /etc/op-agent/smtp.pass --smtp-tls required

Files given with --secret-file and --smtp-password-file are read by each manager from its own
disk when it sends (absolute paths); the rule stores only their paths. --template is read here.
Kinds: run.failed (brings run.recovered), node.not_ready (brings node.ready), package.failed,
invocation.finished, and the later kinds listed in docs/notifications.md.")]
    Add(Box<NotifyAdd>),
    /// List the rules.
    List,
    /// Remove a rule.
    Remove { name: String },
    /// Send a sample event through a rule now and print the receiver's answer (exit 1 when the
    /// delivery failed).
    Test { name: String },
}

// A channel's own flags conflict with the other channels: clap's `requires` alone let
// `--webhook URL --smtp HOST:PORT` (or `--alertmanager URL --secret-file F`) through, and the
// flag was then dropped without a word.
const NOT_WEBHOOK: [&str; 2] = ["alertmanager", "email"];
const NOT_EMAIL: [&str; 2] = ["webhook", "alertmanager"];

/// `notify add`: a rule's name, its channel (exactly one) and its filter.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("channel").required(true).multiple(false)
    .args(["webhook", "alertmanager", "email"])))]
pub struct NotifyAdd {
    pub name: String,
    /// POST each event as JSON to this URL.
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
    /// Post alerts to this Prometheus Alertmanager (its base URL).
    #[arg(long, value_name = "URL")]
    pub alertmanager: Option<String>,
    /// Mail each event to this address (repeatable).
    #[arg(long, value_name = "ADDR", requires = "smtp")]
    pub email: Vec<String>,
    /// Only these event kinds (repeatable) [default: all].
    #[arg(long = "kind", value_name = "K")]
    pub kinds: Vec<String>,
    /// Only events of jobs matching this glob (repeatable).
    #[arg(long = "job", value_name = "GLOB")]
    pub jobs: Vec<String>,
    /// Only count hosts with this label KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Fire only for at least N hosts, or P% of the hosts the fire selected.
    #[arg(long, value_name = "N|P%")]
    pub min_hosts: Option<String>,
    /// A body template (MiniJinja) for the webhook, read from this file now.
    #[arg(long, value_name = "FILE", requires = "webhook", conflicts_with_all = NOT_WEBHOOK)]
    pub template: Option<std::path::PathBuf>,
    /// A file on each manager holding the webhook's HMAC key (absolute path).
    #[arg(long, value_name = "F", requires = "webhook", conflicts_with_all = NOT_WEBHOOK)]
    pub secret_file: Option<std::path::PathBuf>,
    /// The SMTP server, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", requires = "email", conflicts_with_all = NOT_EMAIL)]
    pub smtp: Option<String>,
    /// The SMTP user (needs --smtp-password-file).
    #[arg(long, value_name = "U", requires = "email", conflicts_with_all = NOT_EMAIL)]
    pub smtp_user: Option<String>,
    /// A file on each manager holding the SMTP password (absolute path).
    #[arg(long, value_name = "F", requires = "email", conflicts_with_all = NOT_EMAIL)]
    pub smtp_password_file: Option<std::path::PathBuf>,
    /// STARTTLS: opportunistic (when offered) or required.
    #[arg(
        long,
        value_name = "MODE",
        default_value = "opportunistic",
        requires = "email",
        conflicts_with_all = NOT_EMAIL
    )]
    pub smtp_tls: String,
    /// The sender address [default: op-agent@localhost].
    #[arg(long, value_name = "ADDR", requires = "email", conflicts_with_all = NOT_EMAIL)]
    pub from: Option<String>,
}

/// A duration flag in whole seconds: `30`, `30s`, `5m`, `1h`, `30d` (op_proto::units).
fn seconds(text: &str) -> Result<u64, String> {
    op_proto::units::parse_duration(text)
        .map(|d| d.as_secs())
        .map_err(|e| e.to_string())
}

/// Accepts the seed's `--o wide` spelling by rewriting it to `-o wide` before clap sees it, and
/// `download NAME -o FILE` (curl's habit) by rewriting `-o FILE` to `--out FILE` when FILE is not
/// an output format. The seed's help text printed `–o wide` with an en dash, which people copy:
/// a leading en or em dash is read as `-`.
pub fn normalize_args(args: Vec<OsString>) -> Vec<OsString> {
    let args: Vec<OsString> = args
        .into_iter()
        .map(|a| {
            match a
                .to_str()
                .and_then(|s| s.strip_prefix(['\u{2013}', '\u{2014}']))
            {
                Some(rest) => OsString::from(format!("-{rest}")),
                None => a,
            }
        })
        .map(|a| {
            if a == "--o" {
                OsString::from("-o")
            } else if let Some(rest) = a.to_str().and_then(|s| s.strip_prefix("--o=")) {
                OsString::from(format!("-o={rest}"))
            } else {
                a
            }
        })
        .collect();
    let is_format = |v: &str| Format::from_str(v, true).is_ok();
    let Some(download) = args.iter().position(|a| a == "download") else {
        return args;
    };
    let mut out = Vec::with_capacity(args.len());
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let text = a.to_str().unwrap_or("");
        if i > download {
            if text == "-o"
                && let Some(value) = args.get(i + 1).and_then(|v| v.to_str())
                && !is_format(value)
            {
                out.push(OsString::from("--out"));
                out.push(args[i + 1].clone());
                i += 2;
                continue;
            }
            if let Some(value) = text.strip_prefix("-o=").or_else(|| {
                text.strip_prefix("-o")
                    .filter(|v| !v.is_empty() && !v.starts_with('='))
            }) && !is_format(value)
            {
                out.push(OsString::from(format!("--out={value}")));
                i += 1;
                continue;
            }
        }
        out.push(a.clone());
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_definition_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }

    fn norm(args: &[&str]) -> Vec<String> {
        normalize_args(args.iter().map(OsString::from).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn a_notify_channels_own_flags_are_refused_with_another_channel() {
        let parse = |args: &[&str]| {
            let mut all = vec!["agentcli", "notify", "add", "r"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all)
        };
        for args in [
            &["--webhook", "https://h/op", "--smtp", "mail:587"][..],
            &["--webhook", "https://h/op", "--smtp-tls", "required"],
            &["--alertmanager", "http://am:9093", "--secret-file", "/k"],
            &["--alertmanager", "http://am:9093", "--template", "t.j2"],
            &["--email", "a@b.c", "--smtp", "m:25", "--secret-file", "/k"],
            &["--alertmanager", "http://am:9093", "--from", "a@b.c"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{args:?}: {err}"
            );
        }
        for args in [
            &["--webhook", "https://h/op", "--secret-file", "/k"][..],
            &[
                "--email",
                "a@b.c",
                "--smtp",
                "m:25",
                "--smtp-tls",
                "required",
            ],
            &["--alertmanager", "http://am:9093"],
        ] {
            parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }

    #[test]
    fn download_takes_curl_style_output_file() {
        assert_eq!(
            norm(&["agentcli", "download", "t.py", "-o", "/tmp/x"]),
            ["agentcli", "download", "t.py", "--out", "/tmp/x"]
        );
        assert_eq!(
            norm(&["agentcli", "download", "t.py", "-o", "json"]),
            ["agentcli", "download", "t.py", "-o", "json"]
        );
        assert_eq!(
            norm(&["agentcli", "download", "t.py", "-o/tmp/x", "--o", "json"]),
            ["agentcli", "download", "t.py", "--out=/tmp/x", "-o", "json"]
        );
        assert_eq!(
            norm(&["agentcli", "get", "jobs", "-o", "wide"]),
            ["agentcli", "get", "jobs", "-o", "wide"]
        );
        let cli =
            Cli::try_parse_from(norm(&["agentcli", "download", "t.py", "7", "-o", "f"])).unwrap();
        match cli.command {
            Command::Download {
                name, version, out, ..
            } => {
                assert_eq!((name.as_str(), version), ("t.py", Some(7)));
                assert_eq!(out.unwrap(), std::path::PathBuf::from("f"));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create or replace a secret. The value is read from stdin (or --from-file), never from the
    /// command line; one trailing newline is dropped; an empty value is refused.
    #[command(after_help = "\
Examples:
  printf '%s' \"$PW\" | agentcli secret set db/pw
  agentcli secret set api/key --from-file /root/api.key
  agentcli secret set db/pw              (type the value, then Ctrl-D)

Use it in a task file as \"Env\": {\"DB_PW\": \"secret:db/pw\"}. Names: letters, digits,
'.', '_', '-' and '/' (as a path: db/pw).")]
    Set {
        name: String,
        /// Read the value from this file instead of stdin.
        #[arg(long, value_name = "FILE")]
        from_file: Option<std::path::PathBuf>,
    },
    /// List secrets: name, when and by whom last set (never values).
    List,
    /// Remove a secret (refused while a job uses it).
    Rm { name: String },
}

/// A staged rollout of an upload or a save (issue 21; docs/rollouts.md).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RolloutArgs {
    /// Stage the change: host counts, then percentages of the selected hosts (e.g. 1,10%,100%).
    #[arg(long = "rollout", value_name = "STAGES")]
    pub rollout: Option<String>,
    /// How long each stage runs before the next [default: 60s; 0 = no wait].
    #[arg(long = "step-wait", value_name = "DUR", requires = "rollout")]
    pub step_wait: Option<String>,
    /// Halt when this many admitted hosts failed, or this percentage of them [default: 1].
    #[arg(long = "halt-on", value_name = "N|P%", requires = "rollout")]
    pub halt_on: Option<String>,
    /// On halt, return every admitted host to the previous version.
    #[arg(long = "auto-rollback", requires = "rollout")]
    pub auto_rollback: bool,
}

impl RolloutArgs {
    /// Checks the flags as the manager will, with errors that name the flag
    /// (`--step-wait: ...`), before anything is sent.
    pub fn check(&self) -> Result<(), String> {
        match &self.rollout {
            Some(stages) => op_proto::rollout::RolloutRequest::from_flags(
                stages,
                self.step_wait.as_deref(),
                self.halt_on.as_deref(),
                self.auto_rollback,
            )
            .plan_for_flags()
            .map(|_| ()),
            None => Ok(()),
        }
    }

    /// The query parameters the manager takes.
    pub fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(r) = &self.rollout {
            q.push(("rollout", r.clone()));
            if let Some(w) = &self.step_wait {
                q.push(("step_wait", w.clone()));
            }
            if let Some(h) = &self.halt_on {
                q.push(("halt_on", h.clone()));
            }
            if self.auto_rollback {
                q.push(("auto_rollback", "true".to_string()));
            }
        }
        q
    }
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Every rollout, newest first.
    List,
    /// One rollout: its stages, threshold, and each selected host's state.
    #[command(
        after_help = "Example:\n  agentcli rollout status 0193a1b2-0000-7000-8000-000000000001"
    )]
    Status { id: String },
    /// Hold a running rollout at its stage.
    Pause { id: String },
    /// Resume a paused or halted rollout (failures before now no longer count).
    Resume { id: String },
    /// Stop a rollout: every host returns to the previous version.
    Abort { id: String },
    /// Give every host the new version now, and finish.
    Promote { id: String },
    /// A package's default rollout: uploads of it without --rollout are staged by it
    /// (`--rollout 100%` on an upload reaches every host at once). Alone: every package's.
    #[command(after_help = "\
Examples:
  agentcli rollout default tool.sh --rollout 1,10%,100% --step-wait 5m --halt-on 2
  agentcli rollout default tool.sh             show it
  agentcli rollout default tool.sh --none      uploads of tool.sh are unstaged again
  agentcli rollout default                     every package's default rollout")]
    Default {
        /// The package.
        name: Option<String>,
        #[command(flatten)]
        rollout: RolloutArgs,
        /// Clear the package's default rollout.
        #[arg(long = "none", conflicts_with = "rollout", requires = "name")]
        none: bool,
    },
}
