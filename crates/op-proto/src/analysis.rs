//! What the operator is told about failed runs and package rollouts, decided once.
//!
//! `agentcli analysis`, `agentcli logs` and the web console all describe the same runs and the
//! same fleet; this module is the one place that says how (DESIGN 13.2: the CLI, the console and
//! events use one implementation). It is pure: callers read the records, this module judges them.
//!
//! - A failed run is described by its **kind** (`exit 2`, `signal 9`, `timeout`, `killed`,
//!   `lost`) and its **signature**, the line that says what went wrong: the last non-empty line of
//!   its stderr (a program reports its error there, and a Python traceback ends with the
//!   exception), else the last non-empty line of its merged output (a run that wrote nothing on
//!   stderr, or a record from an agent that did not keep stderr apart), else the first line of the
//!   agent's error (`could not start ...`), else the kind.
//! - Failures group across hosts by job, kind and signature: `exit 2 on 37 of 2,000 hosts: ...`.
//! - A host's [`Standing`] with a package's current version comes from its last report. One rule
//!   decides the case the reports leave open: an agent retrying after a failed attempt reports
//!   `downloading` with the last error, and that host counts as **failed** (`failed: REASON
//!   (retrying)`) until an attempt succeeds, since the failure is what needs a look.

use std::collections::BTreeMap;

use crate::node::{NodeInfo, NodeStatus};
use crate::package::{PackageState, PackageVersion};
use crate::run::{RunRecord, RunStatus};

/// How a run that did not succeed ended, in a word or two.
pub fn failure_kind(run: &RunRecord) -> String {
    match (run.status, run.exit_code, run.signal) {
        (RunStatus::Timeout | RunStatus::Killed | RunStatus::Lost, ..) => {
            run.status.as_str().to_string()
        }
        (_, _, Some(signal)) => format!("signal {signal}"),
        (_, Some(code), None) => format!("exit {code}"),
        _ => run.status.as_str().to_string(),
    }
}

/// The line that says what went wrong (see the module doc for the order of the sources).
pub fn signature(run: &RunRecord) -> String {
    last_line(&run.stderr_tail)
        .or_else(|| last_line(&run.output))
        .or_else(|| {
            run.error
                .as_deref()
                .and_then(|e| e.lines().map(str::trim).find(|l| !l.is_empty()))
        })
        .map(str::to_string)
        .unwrap_or_else(|| failure_kind(run))
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

/// One failed run, as every front end describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: String,
    pub signature: String,
    /// The agent's own reason (`exit status 2`, `timeout after 10s`), else the kind.
    pub error: String,
}

impl Failure {
    pub fn of(run: &RunRecord) -> Failure {
        let kind = failure_kind(run);
        Failure {
            error: run
                .error
                .as_deref()
                .and_then(|e| e.lines().next())
                .filter(|e| !e.trim().is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| kind.clone()),
            signature: signature(run),
            kind,
        }
    }

    /// `exit status 3: boom: no such table`: the reason, then the signature unless it says the
    /// same.
    pub fn summary(&self) -> String {
        if self.error.contains(&self.signature) {
            self.error.clone()
        } else {
            format!("{}: {}", self.error, self.signature)
        }
    }
}

/// Failed runs of one job that ended the same way, across hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureGroup {
    pub job: String,
    pub kind: String,
    pub signature: String,
    /// Hostnames, in the order the runs were given.
    pub hosts: Vec<String>,
}

impl FailureGroup {
    /// `exit 2 on 37 of 2,000 hosts`; `of_hosts` is how many hosts the caller looked at.
    pub fn headline(&self, of_hosts: usize) -> String {
        format!(
            "{} on {} of {} hosts",
            self.kind,
            thousands(self.hosts.len()),
            thousands(of_hosts)
        )
    }
}

/// Groups the failed runs among `runs` (one per host, typically each host's latest) by job, kind
/// and signature; the largest group first. Runs that did not fail are skipped.
pub fn group_failures<'a>(runs: impl IntoIterator<Item = &'a RunRecord>) -> Vec<FailureGroup> {
    let mut groups: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    for run in runs.into_iter().filter(|r| r.status.is_failure()) {
        let f = Failure::of(run);
        groups
            .entry((run.job.clone(), f.kind, f.signature))
            .or_default()
            .push(run.hostname.clone());
    }
    let mut out: Vec<FailureGroup> = groups
        .into_iter()
        .map(|((job, kind, signature), hosts)| FailureGroup {
            job,
            kind,
            signature,
            hosts,
        })
        .collect();
    // Stable: equal sizes keep the key order.
    out.sort_by_key(|g| std::cmp::Reverse(g.hosts.len()));
    out
}

/// `2000` → `2,000`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A host's standing with the current version of one package, from its last report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// The version is in place (even if a later attempt at another version failed).
    Current,
    /// Downloading or unpacking it, with no failure so far.
    Downloading,
    /// The last attempt failed; `retrying` while the agent is at it again.
    Failed { reason: String, retrying: bool },
    /// Holds another version and has not started on this one.
    Outdated,
    /// Reported nothing about the package: it has not heard of it yet, or its agent predates
    /// packages.
    Missing,
}

impl Standing {
    pub fn of(package: &PackageVersion, node: &NodeInfo) -> Standing {
        let Some(held) = node.packages.iter().find(|i| i.name == package.name) else {
            return Standing::Missing;
        };
        if held.version == package.version {
            return Standing::Current;
        }
        let reason = || {
            held.error
                .clone()
                .unwrap_or_else(|| "no reason given".to_string())
        };
        match (held.state, &held.error) {
            (PackageState::Downloading, None) => Standing::Downloading,
            (PackageState::Downloading, Some(_)) => Standing::Failed {
                reason: reason(),
                retrying: true,
            },
            (PackageState::Failed, _) => Standing::Failed {
                reason: reason(),
                retrying: false,
            },
            (PackageState::Installed, _) => Standing::Outdated,
        }
    }

    /// One word: `current`, `downloading`, `failed`, `outdated`, `missing`.
    pub fn word(&self) -> &'static str {
        match self {
            Standing::Current => "current",
            Standing::Downloading => "downloading",
            Standing::Failed { .. } => "failed",
            Standing::Outdated => "outdated",
            Standing::Missing => "missing",
        }
    }

    /// The word with the reason: `failed: sha256 mismatch (retrying)`.
    pub fn describe(&self) -> String {
        match self {
            Standing::Failed { reason, retrying } => format!(
                "failed: {reason}{}",
                if *retrying { " (retrying)" } else { "" }
            ),
            other => other.word().to_string(),
        }
    }
}

/// The hosts that count for a rollout: every node that has not left, by hostname.
pub fn fleet(nodes: &[NodeInfo]) -> Vec<&NodeInfo> {
    let mut hosts: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| n.status != NodeStatus::Left)
        .collect();
    hosts.sort_by(|a, b| (&a.hostname, a.node_id).cmp(&(&b.hostname, b.node_id)));
    hosts
}

/// The hosts a package version is meant for: the [`fleet`] narrowed by the version's targeting
/// (`PackageVersion::target`). A host outside it is neither missing nor failed for the version.
pub fn targeted<'a>(package: &PackageVersion, nodes: &'a [NodeInfo]) -> Vec<&'a NodeInfo> {
    let mut hosts = fleet(nodes);
    if !crate::package::is_everywhere(&package.target) {
        hosts.retain(|n| package.target.matches(&n.identity()));
    }
    hosts
}

/// How far the fleet has come on one package version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Convergence {
    pub hosts: usize,
    pub current: usize,
    pub downloading: usize,
    pub failed: usize,
    pub outdated: usize,
    pub missing: usize,
}

impl Convergence {
    /// Counts the [`targeted`] hosts of `nodes` by [`Standing`].
    pub fn of(package: &PackageVersion, nodes: &[NodeInfo]) -> Convergence {
        let mut c = Convergence::default();
        for node in targeted(package, nodes) {
            c.add(&Standing::of(package, node));
        }
        c
    }

    pub fn add(&mut self, standing: &Standing) {
        self.hosts += 1;
        *match standing {
            Standing::Current => &mut self.current,
            Standing::Downloading => &mut self.downloading,
            Standing::Failed { .. } => &mut self.failed,
            Standing::Outdated => &mut self.outdated,
            Standing::Missing => &mut self.missing,
        } += 1;
    }

    /// Hosts not on the version.
    pub fn behind(&self) -> usize {
        self.hosts - self.current
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use uuid::Uuid;

    use super::*;
    use crate::package::InstalledPackage;
    use crate::run::Trigger;

    fn run(host: &str, status: RunStatus, code: Option<i32>, output: &str) -> RunRecord {
        RunRecord {
            run_id: Uuid::nil(),
            job: "etl".into(),
            job_revision: 1,
            node_id: Uuid::nil(),
            hostname: host.into(),
            ips: vec![],
            trigger: Trigger::Cron,
            attempt: 0,
            invocation_id: None,
            params: Default::default(),
            command: "etl.sh".into(),
            planned_at: None,
            started_at: None,
            ended_at: None,
            status,
            exit_code: code,
            signal: None,
            error: code.map(|c| format!("exit status {c}")),
            output: output.into(),
            output_truncated: false,
            output_bytes: output.len() as u64,
            stderr_tail: String::new(),
            rusage: None,
            notes: vec![],
        }
    }

    #[test]
    fn the_signature_is_the_last_line_of_stderr() {
        // The error on stderr, then `fine` on stdout: the merged output ends with `fine`, and the
        // signature is still the error.
        let mut r = run(
            "a",
            RunStatus::Failed,
            Some(3),
            "boom: no such table\nfine\n",
        );
        r.stderr_tail = "boom: no such table\n\n".into();
        let f = Failure::of(&r);
        assert_eq!(
            (f.kind.as_str(), f.signature.as_str()),
            ("exit 3", "boom: no such table")
        );
        assert_eq!(f.summary(), "exit status 3: boom: no such table");
        // A Python traceback on stderr ends with the exception, whatever stdout said after it.
        let mut py = run("a", RunStatus::Failed, Some(1), "");
        py.stderr_tail =
            "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n    \
             rows[0]['id']\nKeyError: 'id'\n"
                .into();
        py.output = format!("{}processed 0 rows\n", py.stderr_tail);
        assert_eq!(signature(&py), "KeyError: 'id'");
    }

    #[test]
    fn without_stderr_the_signature_falls_back_to_the_output() {
        // Nothing on stderr (or a record from an agent that did not keep it): the merged
        // output's last non-empty line.
        let r = run(
            "a",
            RunStatus::Failed,
            Some(3),
            "fine\nboom: no such table\n\n",
        );
        assert_eq!(signature(&r), "boom: no such table");
        // Blank lines on stderr say nothing: the output speaks.
        let mut blank = r.clone();
        blank.stderr_tail = "\n  \n".into();
        assert_eq!(signature(&blank), "boom: no such table");
        let traceback =
            "Traceback (most recent call last):\n  File \"x.py\", line 1\nKeyError: 'id'\n";
        assert_eq!(
            signature(&run("a", RunStatus::Failed, Some(1), traceback)),
            "KeyError: 'id'"
        );
        // No output: the agent's reason, then the kind.
        let mut silent = run("a", RunStatus::Failed, None, "");
        silent.error = Some("could not start /bin/bash: No such file\nmore".into());
        assert_eq!(
            signature(&silent),
            "could not start /bin/bash: No such file"
        );
        silent.error = None;
        silent.signal = Some(9);
        assert_eq!(signature(&silent), "signal 9");
        assert_eq!(Failure::of(&silent).summary(), "signal 9");
    }

    #[test]
    fn kinds() {
        let mut r = run("a", RunStatus::Timeout, None, "");
        r.signal = Some(15);
        assert_eq!(failure_kind(&r), "timeout");
        r.status = RunStatus::Failed;
        assert_eq!(failure_kind(&r), "signal 15");
        assert_eq!(failure_kind(&run("a", RunStatus::Lost, None, "")), "lost");
        assert_eq!(
            failure_kind(&run("a", RunStatus::Failed, Some(2), "")),
            "exit 2"
        );
    }

    #[test]
    fn failures_group_by_job_kind_and_signature() {
        let runs = [
            run("a", RunStatus::Failed, Some(2), "x\nno such file\n"),
            run("b", RunStatus::Ok, Some(0), "fine\n"),
            run("c", RunStatus::Failed, Some(2), "y\nno such file\n"),
            run("d", RunStatus::Failed, Some(1), "disk full\n"),
            run("e", RunStatus::Skipped, None, ""),
        ];
        let groups = group_failures(&runs);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].hosts, ["a", "c"]);
        assert_eq!(groups[0].signature, "no such file");
        assert_eq!(groups[0].headline(2000), "exit 2 on 2 of 2,000 hosts");
        assert_eq!(groups[1].hosts, ["d"]);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(2000), "2,000");
        assert_eq!(thousands(37), "37");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    fn node(n: u8, status: NodeStatus, held: Option<InstalledPackage>) -> NodeInfo {
        let t = DateTime::from_timestamp(1_730_000_000, 0).unwrap();
        NodeInfo {
            node_id: Uuid::from_u128(u128::from(n)),
            hostname: format!("host-{n}"),
            ips: vec![],
            labels: Default::default(),
            manager_labels: Default::default(),
            facts: None,
            agent_version: "0.1.0".into(),
            os: String::new(),
            arch: String::new(),
            machine_id: String::new(),
            status,
            degraded: None,
            clock_skew_ms: None,
            capabilities: Vec::new(),
            first_seen: t,
            last_seen: t,
            load: None,
            running: vec![],
            packages: held.into_iter().collect(),
            stats: Default::default(),
            drain: None,
        }
    }

    fn held(version: u64, state: PackageState, error: Option<&str>) -> Option<InstalledPackage> {
        Some(InstalledPackage {
            name: "tool".into(),
            version,
            sha256: String::new(),
            state,
            target_version: None,
            error: error.map(str::to_string),
            fetched: None,
        })
    }

    #[test]
    fn package_standing_and_convergence() {
        let package = PackageVersion {
            name: "tool".into(),
            version: 7,
            sha256: String::new(),
            size: 1,
            deploy_dir: String::new(),
            uploaded_at: DateTime::from_timestamp(7, 0).unwrap(),
            uploader: String::new(),
            current: true,
            target: Default::default(),
        };
        let nodes = [
            node(1, NodeStatus::Ready, held(7, PackageState::Installed, None)),
            // A failed attempt at a newer version leaves the current one in place.
            node(
                2,
                NodeStatus::Ready,
                held(7, PackageState::Failed, Some("x")),
            ),
            node(
                3,
                NodeStatus::Ready,
                held(6, PackageState::Downloading, None),
            ),
            // The rule: a download carrying an error is a failure being retried.
            node(
                4,
                NodeStatus::Ready,
                held(6, PackageState::Downloading, Some("connection reset")),
            ),
            node(5, NodeStatus::Ready, held(6, PackageState::Failed, None)),
            node(
                6,
                NodeStatus::NotReady,
                held(6, PackageState::Installed, None),
            ),
            node(7, NodeStatus::Ready, None),
            node(8, NodeStatus::Left, None),
        ];
        let described: Vec<String> = fleet(&nodes)
            .into_iter()
            .map(|n| Standing::of(&package, n).describe())
            .collect();
        assert_eq!(
            described,
            [
                "current",
                "current",
                "downloading",
                "failed: connection reset (retrying)",
                "failed: no reason given",
                "outdated",
                "missing"
            ]
        );
        let c = Convergence::of(&package, &nodes);
        assert_eq!(
            (
                c.hosts,
                c.current,
                c.downloading,
                c.failed,
                c.outdated,
                c.missing
            ),
            (7, 2, 1, 2, 1, 1)
        );
        assert_eq!(c.behind(), 5);

        // Targeted at host-1 and at the hosts labelled role=db: the others do not count at all.
        let mut targeted_package = package.clone();
        targeted_package.target =
            crate::package::parse_target(&["host-1,label.role=db".into()], &[], &[]).unwrap();
        let mut nodes = nodes;
        nodes[6].labels.insert("role".into(), "db".into());
        let hosts: Vec<&str> = targeted(&targeted_package, &nodes)
            .iter()
            .map(|n| n.hostname.as_str())
            .collect();
        assert_eq!(hosts, ["host-1", "host-7"]);
        let c = Convergence::of(&targeted_package, &nodes);
        assert_eq!((c.hosts, c.current, c.missing, c.failed), (2, 1, 1, 0));
    }
}
