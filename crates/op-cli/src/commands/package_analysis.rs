//! `agentcli analysis packages [NAME]`: every host that is not on the current version of every
//! package, with the reason, then one summary line per package. Exit 1 when any host is behind.
//!
//! The reason comes from what each agent reported in its last heartbeat: `downloading`,
//! `failed: REASON` (the agent keeps the old version and retries with backoff), `missing` (the
//! agent reported nothing for the package: it has not heard of it yet, or runs an agent without
//! packages), `outdated` (it holds another version and has not started on the current one). A
//! host that is not Ready is named as such, since what it last reported may be stale. The
//! standing of a host is `op_proto::analysis::Standing`, which the web console shows too; a host
//! whose agent retries after a failed download counts as failed (`failed: REASON (retrying)`).
//!
//! A targeted version (`upload --host/--exclude/--label`) counts only the hosts it targets
//! (`op_proto::analysis::targeted`): a host outside is neither missing nor failed, and the
//! summary line names the targeting.
//!
//! Packages from peers: each summary line says which share of the current version's bytes the
//! hosts fetched from peer agents (`from peers: 82.5 %`, from what each agent reports in
//! `InstalledPackage::fetched`); `analysis packages NAME` also lists, per host, the bytes from
//! peers and from managers. Peers that failed a host (a chunk failing its sha256, a refused
//! ticket, no answer) are listed as bad sources, with the host that reported them.

use std::io::Write;

use chrono::{DateTime, Utc};
use op_proto::analysis::{Convergence, Standing, targeted};
use op_proto::package::{PackageVersion, describe_target, is_everywhere};
use op_proto::{NodeInfo, NodeStatus};
use serde::Serialize;

use super::Ctx;
use crate::Outcome;
use crate::cli::Format;
use crate::output::{Table, human_bytes, human_secs, write_json};

/// One host behind on one package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Behind {
    pub package: String,
    pub current: u64,
    pub hostname: String,
    pub ips: String,
    /// The version the host has in place (0 = none).
    pub installed: u64,
    pub reason: String,
}

/// Counts for one package across the fleet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub package: String,
    pub version: u64,
    pub hosts: usize,
    pub current: usize,
    pub downloading: usize,
    pub failed: usize,
    pub missing: usize,
    pub outdated: usize,
    /// The version's targeting (`label role=db`); absent when it goes to every host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Bytes of this version the hosts that report it fetched from peer agents, and from
    /// managers (packages from peers; 0 and 0 when no host reported where its bytes came from).
    pub from_peers_bytes: u64,
    pub from_managers_bytes: u64,
}

/// Where one host's bytes of a package version came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostSources {
    pub package: String,
    pub version: u64,
    pub hostname: String,
    pub ips: String,
    pub from_peers: u64,
    pub from_managers: u64,
    /// `from_peers` in percent of both, one decimal.
    pub from_peers_percent: f64,
    /// Peers that failed this host during that download.
    pub bad_sources: Vec<op_proto::package::BadSource>,
}

/// `82.5 %` of `part` in `part + rest`, None when both are 0.
fn percent(part: u64, rest: u64) -> Option<f64> {
    let total = part + rest;
    (total > 0).then(|| (1000.0 * part as f64 / total as f64).round() / 10.0)
}

impl Summary {
    /// `test.py 1730000000: 48/50 hosts current, 1 failed, 1 downloading`, or for a targeted
    /// version `schema.sql 1730000000 (label role=db): 2/2 hosts current`.
    pub fn line(&self) -> String {
        let target = self
            .target
            .as_ref()
            .map(|t| format!(" ({t})"))
            .unwrap_or_default();
        let mut line = format!(
            "{} {}{target}: {}/{} hosts current",
            self.package, self.version, self.current, self.hosts
        );
        for (n, what) in [
            (self.failed, "failed"),
            (self.downloading, "downloading"),
            (self.outdated, "outdated"),
            (self.missing, "missing"),
        ] {
            if n > 0 {
                line.push_str(&format!(", {n} {what}"));
            }
        }
        if let Some(p) = percent(self.from_peers_bytes, self.from_managers_bytes) {
            line.push_str(&format!(", from peers: {p:.1} %"));
        }
        line
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub behind: Vec<Behind>,
    pub summaries: Vec<Summary>,
    /// Per host that reported it, where its bytes of the current version came from.
    pub sources: Vec<HostSources>,
}

/// Compares what every non-Left node the version targets reports with the current version of
/// each package.
pub fn analyze(packages: &[PackageVersion], nodes: &[NodeInfo], now: DateTime<Utc>) -> Report {
    let mut report = Report::default();
    let mut packages: Vec<&PackageVersion> = packages.iter().collect();
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    for p in packages {
        let mut c = Convergence::default();
        let (mut from_peers, mut from_managers) = (0, 0);
        for node in targeted(p, nodes) {
            if let Some(f) = node
                .packages
                .iter()
                .find(|i| i.name == p.name)
                .and_then(|i| i.fetched.as_ref())
                .filter(|f| f.version == p.version)
            {
                from_peers += f.from_peers;
                from_managers += f.from_managers;
                report.sources.push(HostSources {
                    package: p.name.clone(),
                    version: p.version,
                    hostname: node.hostname.clone(),
                    ips: node.ip_string(),
                    from_peers: f.from_peers,
                    from_managers: f.from_managers,
                    from_peers_percent: percent(f.from_peers, f.from_managers).unwrap_or(0.0),
                    bad_sources: f.bad_sources.clone(),
                });
            }
            let standing = Standing::of(p, node);
            c.add(&standing);
            if standing == Standing::Current {
                continue;
            }
            let installed = node
                .packages
                .iter()
                .find(|i| i.name == p.name)
                .map_or(0, |i| i.version);
            let mut reason = standing.describe();
            if node.status != NodeStatus::Ready {
                reason.push_str(&format!(
                    " (node {}, last seen {} ago)",
                    node.status.as_str(),
                    human_secs((now - node.last_seen).num_seconds())
                ));
            }
            report.behind.push(Behind {
                package: p.name.clone(),
                current: p.version,
                hostname: node.hostname.clone(),
                ips: node.ip_string(),
                installed,
                reason,
            });
        }
        report.summaries.push(Summary {
            package: p.name.clone(),
            version: p.version,
            hosts: c.hosts,
            current: c.current,
            downloading: c.downloading,
            failed: c.failed,
            missing: c.missing,
            outdated: c.outdated,
            target: (!is_everywhere(&p.target)).then(|| describe_target(&p.target)),
            from_peers_bytes: from_peers,
            from_managers_bytes: from_managers,
        });
    }
    report
}

/// The report as text; with the bytes from peers and managers of every host when `per_host`.
pub fn print(out: &mut impl Write, report: &Report, per_host: bool) -> std::io::Result<()> {
    if report.summaries.is_empty() {
        return writeln!(out, "no packages");
    }
    if per_host && !report.sources.is_empty() {
        let mut t = Table::new(&[
            "PACKAGENAME",
            "PACKAGEVERSION",
            "HOSTNAME",
            "HOSTIP",
            "FROMPEERS",
            "FROMMANAGERS",
            "PEERSHARE",
        ]);
        for h in &report.sources {
            t.row([
                h.package.clone(),
                h.version.to_string(),
                h.hostname.clone(),
                h.ips.clone(),
                human_bytes(h.from_peers),
                human_bytes(h.from_managers),
                format!("{:.1} %", h.from_peers_percent),
            ]);
        }
        t.write(out)?;
        writeln!(out)?;
    }
    let bad: Vec<(&HostSources, &op_proto::package::BadSource)> = report
        .sources
        .iter()
        .flat_map(|h| h.bad_sources.iter().map(move |b| (h, b)))
        .collect();
    if !bad.is_empty() {
        let mut t = Table::new(&[
            "PACKAGENAME",
            "PACKAGEVERSION",
            "BADSOURCE",
            "REASON",
            "CHUNKS",
            "REPORTEDBY",
        ]);
        for (h, b) in bad {
            t.row([
                h.package.clone(),
                h.version.to_string(),
                b.url.clone(),
                b.reason.clone(),
                b.count.to_string(),
                h.hostname.clone(),
            ]);
        }
        t.write(out)?;
        writeln!(out)?;
    }
    if !report.behind.is_empty() {
        let mut t = Table::new(&[
            "PACKAGENAME",
            "PACKAGEVERSION",
            "HOSTNAME",
            "HOSTIP",
            "INSTALLED",
            "PACKAGESTATUS",
        ]);
        for b in &report.behind {
            t.row([
                b.package.clone(),
                b.current.to_string(),
                b.hostname.clone(),
                b.ips.clone(),
                if b.installed == 0 {
                    "-".to_string()
                } else {
                    b.installed.to_string()
                },
                b.reason.clone(),
            ]);
        }
        t.write(out)?;
        writeln!(out)?;
    }
    for s in &report.summaries {
        writeln!(out, "{}", s.line())?;
    }
    Ok(())
}

pub async fn run(ctx: &Ctx, name: Option<&str>) -> anyhow::Result<Outcome> {
    let packages: Vec<PackageVersion> = match name {
        Some(n) => ctx
            .call(ctx.client.package_versions(n))
            .await?
            .into_iter()
            .filter(|v| v.current)
            .collect(),
        None => ctx.call(ctx.client.list_packages()).await?,
    };
    let nodes = ctx.call(ctx.client.list_nodes()).await?;
    let report = analyze(&packages, &nodes, Utc::now());
    let mut out = crate::output::stdout();
    if ctx.format == Format::Json {
        write_json(&mut out, &report)?;
    } else {
        print(&mut out, &report, name.is_some())?;
    }
    Ok(if report.behind.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Problem
    })
}

#[cfg(test)]
mod tests {
    use op_proto::node::AgentStats;
    use op_proto::package::{InstalledPackage, PackageState};

    use super::*;

    fn node(n: u8, status: NodeStatus, packages: Vec<InstalledPackage>) -> NodeInfo {
        let t = DateTime::from_timestamp(1_730_000_000, 0).unwrap();
        NodeInfo {
            node_id: uuid::Uuid::from_u128(u128::from(n)),
            hostname: format!("host-{n}"),
            ips: vec![format!("10.0.0.{n}").parse().unwrap()],
            labels: Default::default(),
            manager_labels: Default::default(),
            facts: None,
            agent_version: "0.1.0".into(),
            os: String::new(),
            arch: String::new(),
            machine_id: String::new(),
            status,
            first_seen: t,
            last_seen: t,
            load: None,
            running: vec![],
            packages,
            stats: AgentStats::default(),
            degraded: None,
            clock_skew_ms: None,
            capabilities: Vec::new(),
            drain: None,
        }
    }

    fn held(version: u64, state: PackageState, error: Option<&str>) -> InstalledPackage {
        InstalledPackage {
            name: "test.py".into(),
            version,
            sha256: String::new(),
            state,
            target_version: None,
            error: error.map(str::to_string),
            fetched: None,
        }
    }

    fn package(version: u64) -> PackageVersion {
        PackageVersion {
            name: "test.py".into(),
            version,
            sha256: String::new(),
            size: 1,
            deploy_dir: String::new(),
            uploaded_at: DateTime::from_timestamp(version as i64, 0).unwrap(),
            uploader: String::new(),
            current: true,
            target: Default::default(),
        }
    }

    #[test]
    fn reasons_summary_and_table() {
        let v = 1_730_000_000;
        let nodes = [
            node(
                1,
                NodeStatus::Ready,
                vec![held(v, PackageState::Installed, None)],
            ),
            node(
                2,
                NodeStatus::Ready,
                vec![held(v - 5, PackageState::Failed, Some("sha256 mismatch"))],
            ),
            node(
                3,
                NodeStatus::Ready,
                vec![held(v - 5, PackageState::Downloading, None)],
            ),
            node(4, NodeStatus::Ready, vec![]),
            node(
                5,
                NodeStatus::NotReady,
                vec![held(v - 5, PackageState::Installed, None)],
            ),
            node(6, NodeStatus::Left, vec![]),
            // Failing a newer attempt while the current version stays in place is still current.
            node(
                7,
                NodeStatus::Ready,
                vec![held(v, PackageState::Failed, Some("x"))],
            ),
        ];
        let now = DateTime::from_timestamp(1_730_000_090, 0).unwrap();
        let report = analyze(&[package(v)], &nodes, now);
        assert_eq!(
            report.summaries[0].line(),
            "test.py 1730000000: 2/6 hosts current, 1 failed, 1 downloading, 1 outdated, 1 missing"
        );
        let mut out = Vec::new();
        print(&mut out, &report, false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "PACKAGENAME\tPACKAGEVERSION\tHOSTNAME\tHOSTIP  \tINSTALLED \tPACKAGESTATUS\n\
             test.py    \t1730000000    \thost-2  \t10.0.0.2\t1729999995\tfailed: sha256 mismatch\n\
             test.py    \t1730000000    \thost-3  \t10.0.0.3\t1729999995\tdownloading\n\
             test.py    \t1730000000    \thost-4  \t10.0.0.4\t-         \tmissing\n\
             test.py    \t1730000000    \thost-5  \t10.0.0.5\t1729999995\toutdated (node NotReady, last seen 1m30s ago)\n\
             \n\
             test.py 1730000000: 2/6 hosts current, 1 failed, 1 downloading, 1 outdated, 1 missing\n"
        );
    }

    #[test]
    fn clean_fleet_prints_only_summaries() {
        let v = 7;
        let nodes = [node(
            1,
            NodeStatus::Ready,
            vec![held(v, PackageState::Installed, None)],
        )];
        let report = analyze(&[package(v)], &nodes, Utc::now());
        assert!(report.behind.is_empty());
        let mut out = Vec::new();
        print(&mut out, &report, false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "test.py 7: 1/1 hosts current\n"
        );
        let mut out = Vec::new();
        print(&mut out, &analyze(&[], &nodes, Utc::now()), false).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "no packages\n");
    }

    #[test]
    fn the_share_from_peers_per_version_and_host_and_the_bad_sources() {
        use op_proto::package::{BadSource, FetchSources};
        let v = 5;
        let from = |peers: u64, managers: u64, bad: Vec<BadSource>| {
            let mut h = held(v, PackageState::Installed, None);
            h.fetched = Some(FetchSources {
                version: v,
                from_peers: peers,
                from_managers: managers,
                bad_sources: bad,
            });
            h
        };
        let mut older = held(v, PackageState::Installed, None);
        // Where an older version came from does not count for this one.
        older.fetched = Some(FetchSources {
            version: v - 1,
            from_peers: 1000,
            ..Default::default()
        });
        let nodes = [
            node(1, NodeStatus::Ready, vec![from(0, 4096, vec![])]),
            node(
                2,
                NodeStatus::Ready,
                vec![from(
                    3072,
                    1024,
                    vec![BadSource {
                        url: "http://10.0.0.1:7070".into(),
                        node: None,
                        reason: "sha256".into(),
                        count: 2,
                    }],
                )],
            ),
            node(3, NodeStatus::Ready, vec![older]),
        ];
        let report = analyze(&[package(v)], &nodes, Utc::now());
        assert_eq!(
            report.summaries[0].line(),
            "test.py 5: 3/3 hosts current, from peers: 37.5 %"
        );
        assert_eq!(report.sources.len(), 2);
        assert_eq!(report.sources[1].from_peers_percent, 75.0);
        let mut out = Vec::new();
        print(&mut out, &report, true).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("host-2  \t10.0.0.2\t3.0 KiB  "), "{text}");
        assert!(text.contains("75.0 %"), "{text}");
        assert!(
            text.contains("http://10.0.0.1:7070\tsha256\t2     \thost-2"),
            "{text}"
        );
        // Without per-host lines the bad sources still show.
        let mut out = Vec::new();
        print(&mut out, &report, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.contains("FROMPEERS") && text.contains("BADSOURCE"),
            "{text}"
        );
    }

    #[test]
    fn a_targeted_version_counts_only_its_hosts() {
        let v = 9;
        let mut nodes = [
            node(
                1,
                NodeStatus::Ready,
                vec![held(v, PackageState::Installed, None)],
            ),
            node(2, NodeStatus::Ready, vec![]),
            // Outside the targeting: never heard of the package, yet neither missing nor failed.
            node(3, NodeStatus::Ready, vec![]),
            node(
                4,
                NodeStatus::Ready,
                vec![held(1, PackageState::Failed, Some("x"))],
            ),
        ];
        for n in &mut nodes[..2] {
            n.labels.insert("role".into(), "db".into());
        }
        let mut p = package(v);
        p.target = op_proto::package::parse_target(&[], &[], &["role=db".into()]).unwrap();
        let report = analyze(&[p], &nodes, Utc::now());
        let behind: Vec<&str> = report.behind.iter().map(|b| b.hostname.as_str()).collect();
        assert_eq!(behind, ["host-2"]);
        assert_eq!(
            report.summaries[0].line(),
            "test.py 9 (label role=db): 1/2 hosts current, 1 missing"
        );
    }
}
