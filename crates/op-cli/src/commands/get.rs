//! `agentcli get nodes|jobs|packages`: the seed's tables and the job detail view.

use std::io::Write;

use op_proto::api::{JobView, OnceTarget};
use op_proto::package::PackageVersion;
use op_proto::{NodeInfo, NodeStatus};

use super::Ctx;
use crate::Outcome;
use crate::cli::{Format, GetCommand};
use crate::output::{Table, local_time, write_json};

pub async fn run(ctx: &Ctx, what: GetCommand) -> anyhow::Result<Outcome> {
    match what {
        GetCommand::Nodes { host } => nodes(ctx, host.as_deref()).await,
        GetCommand::Jobs { name: None } => jobs(ctx).await,
        GetCommand::Jobs { name: Some(name) } => job_detail(ctx, &name).await,
        GetCommand::Packages { name } => packages(ctx, name.as_deref()).await,
    }
}

async fn packages(ctx: &Ctx, name: Option<&str>) -> anyhow::Result<Outcome> {
    let list = match name {
        Some(n) => ctx.call(ctx.client.package_versions(n)).await?,
        None => ctx.call(ctx.client.list_packages()).await?,
    };
    let mut out = crate::output::stdout();
    if ctx.format == Format::Json {
        write_json(&mut out, &list)?;
    } else {
        // The default rollouts of the listed packages (`rollout default`), as a column.
        let rollouts = ctx.call(ctx.client.package_rollouts()).await?;
        packages_table(&list, ctx.format == Format::Wide, &rollouts).write(&mut out)?;
    }
    Ok(Outcome::Ok)
}

/// The seed's package table; wide adds which version is current, size, hash, uploader and the
/// targeting. TARGET is in the plain table too as soon as a listed version is targeted (so a
/// fleet without targeting reads exactly as the seed's); ROLLOUT, a package's default rollout,
/// as soon as a listed package has one.
pub fn packages_table(
    list: &[PackageVersion],
    wide: bool,
    rollouts: &[op_proto::rollout::PackageRollout],
) -> Table {
    let mut headers = vec!["PACKAGENAME", "PACKAGEVERSION", "TIMESTAMP", "DEPLOYDIR"];
    if wide {
        headers.extend(["CURRENT", "SIZE", "SHA256", "UPLOADER"]);
    }
    let with_target = wide
        || list
            .iter()
            .any(|p| !op_proto::package::is_everywhere(&p.target));
    if with_target {
        headers.push("TARGET");
    }
    let rollout_of = |name: &str| rollouts.iter().find(|r| r.name == name);
    let with_rollout = list.iter().any(|p| rollout_of(&p.name).is_some());
    if with_rollout {
        headers.push("ROLLOUT");
    }
    let mut table = Table::new(&headers);
    for p in list {
        let mut row = vec![
            p.name.clone(),
            p.version.to_string(),
            local_time(p.uploaded_at),
            p.deploy_dir.clone(),
        ];
        if wide {
            row.extend([
                if p.current { "*" } else { "" }.to_string(),
                p.size.to_string(),
                p.sha256.clone(),
                p.uploader.clone(),
            ]);
        }
        if with_target {
            row.push(op_proto::package::describe_target(&p.target));
        }
        if with_rollout {
            row.push(
                rollout_of(&p.name)
                    .map(|r| r.plan.describe())
                    .unwrap_or_else(|| "-".into()),
            );
        }
        table.row(row);
    }
    table
}

fn status_rank(s: NodeStatus) -> u8 {
    match s {
        NodeStatus::Ready => 0,
        NodeStatus::Degraded => 1,
        NodeStatus::NotReady => 2,
        NodeStatus::Left => 3,
    }
}

/// Nodes sorted the seed's way: Ready first, then by hostname.
pub fn sort_nodes(nodes: &mut [NodeInfo]) {
    nodes.sort_by(|a, b| {
        status_rank(a.status)
            .cmp(&status_rank(b.status))
            .then_with(|| a.hostname.cmp(&b.hostname))
    });
}

async fn nodes(ctx: &Ctx, host: Option<&str>) -> anyhow::Result<Outcome> {
    let mut nodes = match host {
        Some(key) => vec![ctx.call(ctx.client.get_node(key)).await?],
        None => ctx.call(ctx.client.list_nodes()).await?,
    };
    sort_nodes(&mut nodes);
    let mut out = crate::output::stdout();
    if ctx.format == Format::Json {
        write_json(&mut out, &nodes)?;
        return Ok(Outcome::Ok);
    }
    let wide = ctx.format == Format::Wide || host.is_some();
    let mut headers = vec![
        "HOSTNAME",
        "IP",
        "STATUS",
        "VERSION",
        "FIRSTSEEN",
        "LASTSEEN",
    ];
    if wide {
        headers.extend([
            "LABELS",
            "LOAD",
            "RUNNING",
            "PACKAGES",
            "DEGRADED",
            "FACTS",
            "CLOCKSKEW",
        ]);
    }
    let mut table = Table::new(&headers);
    for n in &nodes {
        let mut row = vec![
            n.hostname.clone(),
            // One row per node, whatever its addresses: scripts written against the seed
            // read hostnames with `awk 'NR>1{print $1}'`.
            n.ip_string(),
            n.status_text().to_string(),
            n.agent_version.clone(),
            local_time(n.first_seen),
            local_time(n.last_seen),
        ];
        if wide {
            // Manager-set labels are marked `k=v*`.
            row.push(n.labels_text().join(","));
            row.push(
                n.load
                    .as_ref()
                    .map(|l| format!("{:.2} {:.2} {:.2}", l.load1, l.load5, l.load15))
                    .unwrap_or_default(),
            );
            row.push(n.running.len().to_string());
            row.push(
                n.packages
                    .iter()
                    .map(|p| match p.state {
                        op_proto::package::PackageState::Installed => {
                            format!("{} {}", p.name, p.version)
                        }
                        state => format!(
                            "{} {} ({}{})",
                            p.name,
                            p.version,
                            state.as_str(),
                            p.target_version
                                .map(|t| format!(" {t}"))
                                .unwrap_or_default()
                        ),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            // Why the agent says it is Degraded (a full state disk, a stalled scheduler).
            row.push(
                n.degraded
                    .as_deref()
                    .filter(|_| n.status == NodeStatus::Degraded)
                    .unwrap_or_default()
                    .to_string(),
            );
            // What its agent probed, short: `debian 12, 2 cpus, 23.5 GiB, docker` (all of them
            // under `facts` in -o json).
            row.push(n.facts_text());
            // The agent's clock minus the manager's: a wrong clock fires jobs at wrong times.
            row.push(n.clock_skew_text());
        }
        table.row(row);
    }
    table.write(&mut out)?;
    Ok(Outcome::Ok)
}

fn yes_no(b: bool) -> &'static str {
    if b { "Yes" } else { "No" }
}

fn enabled_word(b: bool) -> &'static str {
    if b { "Enabled" } else { "Disabled" }
}

async fn jobs(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let mut jobs = ctx.call(ctx.client.list_jobs()).await?;
    jobs.sort_by(|a, b| a.record.spec.name.cmp(&b.record.spec.name));
    let mut out = crate::output::stdout();
    if ctx.format == Format::Json {
        write_json(&mut out, &jobs)?;
        return Ok(Outcome::Ok);
    }
    let wide = ctx.format == Format::Wide;
    let mut headers = vec![
        "JOBNAME",
        "COMMAND",
        "CRONEXPR",
        "ONCEJOB",
        "TIMEOUT",
        "ADDTIME",
        "LASTUPDATED",
        "STATUS",
    ];
    if wide {
        headers.extend(["REVISION", "NEXTFIRE", "WHITEHOSTS", "BLACKHOSTS"]);
    }
    let mut table = Table::new(&headers);
    for j in &jobs {
        let s = &j.record.spec;
        let mut row = vec![
            s.name.clone(),
            s.command.clone(),
            s.cron_expr.clone(),
            u8::from(s.once_job).to_string(),
            s.timeout_secs.to_string(),
            local_time(j.record.created_at),
            local_time(j.record.updated_at),
            enabled_word(s.enabled).to_string(),
        ];
        if wide {
            row.push(j.record.revision.to_string());
            row.push(
                j.next_fires
                    .first()
                    .map(|t| local_time(*t))
                    .unwrap_or_default(),
            );
            row.push(host_lines(&s.white_hosts));
            row.push(host_lines(&s.black_hosts));
        }
        table.row(row);
    }
    table.write(&mut out)?;
    Ok(Outcome::Ok)
}

/// Host patterns on one line, so the table keeps one row per job.
fn host_lines(hosts: &[op_proto::HostPattern]) -> String {
    hosts
        .iter()
        .map(|h| h.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

#[derive(serde::Serialize)]
struct JobDetail<'a> {
    #[serde(flatten)]
    job: &'a JobView,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    once_targets: Vec<OnceTarget>,
}

async fn job_detail(ctx: &Ctx, name: &str) -> anyhow::Result<Outcome> {
    let job = ctx.call(ctx.client.get_job(name)).await?;
    let targets = if job.record.spec.once_job {
        ctx.call(ctx.client.once_targets(name, None)).await?
    } else {
        Vec::new()
    };
    let mut out = crate::output::stdout();
    if ctx.format == Format::Json {
        write_json(
            &mut out,
            &JobDetail {
                job: &job,
                once_targets: targets,
            },
        )?;
        return Ok(Outcome::Ok);
    }
    detail_table(&job, &targets).write(&mut out)?;
    out.flush()?;
    Ok(Outcome::Ok)
}

/// The seed's KEYWORD VALUE view, with our fields after the seed's.
pub fn detail_table(job: &JobView, targets: &[OnceTarget]) -> Table {
    let s = &job.record.spec;
    let cg = &s.cgroup;
    let mut t = Table::new(&["KEYWORD", "VALUE"]);
    let mut kv = |k: &str, v: String| t.row([k.to_string(), v]);
    kv("jobName:", s.name.clone());
    kv("command:", s.command.clone());
    kv("Timed task expression(croneExpr):", s.cron_expr.clone());
    kv("Is it a one-time task:", yes_no(s.once_job).to_string());
    kv(
        "Command execution timeout setting(timeout):",
        s.timeout_secs.to_string(),
    );
    kv(
        "Synchronous or asynchronous execution:",
        if s.syn_flag {
            "Synchronous"
        } else {
            "Asynchronous"
        }
        .to_string(),
    );
    kv("CGroup cpu.shares value:", cg.cpu_shares.to_string());
    kv(
        "CGroup cpu.cfs_quota_us value:",
        cg.cpu_quota_us.to_string(),
    );
    kv(
        "CGroup memory.limit_in_bytes value:",
        cg.memory_limit.to_string(),
    );
    kv(
        "CGroup memory.memsw.limit_in_bytes value:",
        cg.memory_sw_limit.to_string(),
    );
    kv(
        "CGroup blkio.throttle.read_bps_device value:",
        cg.io_read_limit.to_string(),
    );
    kv(
        "CGroup blkio.throttle.write_bps_device value:",
        cg.io_write_limit.to_string(),
    );
    kv("CGroup IO restricted devices:", cg.io_limit_device.clone());
    kv(
        "Whitelist of task execution(WHITELIST):",
        host_lines(&s.white_hosts),
    );
    kv(
        "Blacklist of task execution(BLACKLIST):",
        host_lines(&s.black_hosts),
    );
    kv("ADDTIME:", local_time(job.record.created_at));
    kv("LASTUPDATE:", local_time(job.record.updated_at));
    kv("Task status(STATUS):", enabled_word(s.enabled).to_string());
    kv("Revision:", job.record.revision.to_string());
    kv(
        "Time zone:",
        s.time_zone
            .clone()
            .unwrap_or_else(|| "agent local".to_string()),
    );
    kv("Concurrency:", s.concurrency.as_str().to_string());
    if !s.labels.is_empty() {
        kv(
            "Labels:",
            s.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    if !s.params.is_empty() {
        kv("Params:", s.params.join(", "));
    }
    if let Some(dir) = &s.work_dir {
        kv("WorkDir:", dir.clone());
    }
    if let Some(user) = &s.run_as {
        kv("RunAs:", user.clone());
    }
    if s.retries > 0 {
        kv(
            "Retries:",
            format!("{} (delay {}s)", s.retries, s.retry_delay_secs),
        );
    }
    if s.jitter_secs > 0 {
        kv("Jitter:", format!("{}s", s.jitter_secs));
    }
    kv("KillGrace:", format!("{}s", s.kill_grace_secs));
    // The second-wave fields, shown when set: without them a user could not see from here that
    // the leader picks this job's hosts, or when its fires count as missed or overrunning.
    if let Some(n) = s.run_on.count() {
        let hosts = if n == 1 {
            "one host".to_string()
        } else {
            format!("{n} hosts")
        };
        let retry = if s.retry_on_another {
            ", a failed run retried once on another host"
        } else {
            ""
        };
        kv(
            "RunOn:",
            format!("{hosts} per fire, picked {}{retry}", s.pick.as_str()),
        );
    }
    if let Some(g) = s.grace_secs {
        kv("Grace:", format!("{g}s"));
    }
    if let Some(d) = s.max_duration_secs {
        kv("MaxDuration:", format!("{d}s"));
    }
    if !job.next_fires.is_empty() {
        kv(
            "Next fire times:",
            job.next_fires
                .iter()
                .map(|t| local_time(*t))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    if s.new_hosts {
        kv(
            "New hosts (NewHosts):",
            format!("yes, at most {} late hosts at once", s.new_hosts_cap()),
        );
    }
    if s.once_job {
        let mut lines: Vec<String> = targets
            .iter()
            .map(|t| {
                let late = if t.late { " (joined later)" } else { "" };
                format!("{} {}{late}", t.hostname, t.state.as_str())
            })
            .collect();
        if lines.is_empty() {
            lines.push("no hosts selected".to_string());
        }
        kv(
            &format!("Once-job status (version {}):", job.record.revision),
            lines.join("\n"),
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(name: &str, v: u64, dir: &str, current: bool) -> PackageVersion {
        PackageVersion {
            name: name.into(),
            version: v,
            sha256: "0f".repeat(32),
            size: 2048,
            deploy_dir: dir.into(),
            uploaded_at: chrono::DateTime::from_timestamp(v as i64, 0).unwrap(),
            uploader: "admin".into(),
            current,
            target: Default::default(),
        }
    }

    #[test]
    fn the_detail_view_shows_run_on_grace_and_max_duration() {
        let view = |text: &str| {
            let at = chrono::DateTime::from_timestamp(1_730_000_000, 0).unwrap();
            JobView {
                record: op_proto::api::JobRecord {
                    spec: op_proto::JobSpec::from_task_json(text).unwrap(),
                    revision: 1,
                    created_at: at,
                    updated_at: at,
                    updated_by: "admin".into(),
                },
                next_fires: Vec::new(),
                last_fires: Vec::new(),
            }
        };
        let mut out = Vec::new();
        let job = view(
            r#"{"JobName": "report", "Command": "true", "CronExpr": "0 0 3 * * * *",
                "RunOn": 2, "Pick": "hash", "RetryOnAnother": 1, "Grace": 30, "MaxDuration": 600}"#,
        );
        detail_table(&job, &[]).write(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for want in [
            "2 hosts per fire, picked hash, a failed run retried once on another host",
            "Grace:",
            "30s",
            "MaxDuration:",
            "600s",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
        let mut out = Vec::new();
        let plain = view(r#"{"JobName": "tick", "Command": "true", "CronExpr": "@daily"}"#);
        detail_table(&plain, &[]).write(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for absent in ["RunOn:", "Grace:", "MaxDuration:"] {
            assert!(
                !text.lines().any(|l| l.starts_with(absent)),
                "{absent}: {text}"
            );
        }
    }

    #[test]
    fn packages_table_in_the_seed_columns() {
        let list = [
            version(
                "python_project_dir.tar.gz",
                1_730_000_000,
                "/data/op-agent/src",
                true,
            ),
            version("test.py", 1_730_000_100, "", true),
        ];
        let mut out = Vec::new();
        packages_table(&list, false, &[]).write(&mut out).unwrap();
        let (t1, t2) = (
            local_time(list[0].uploaded_at),
            local_time(list[1].uploaded_at),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "PACKAGENAME              \tPACKAGEVERSION\tTIMESTAMP          \tDEPLOYDIR\n\
                 python_project_dir.tar.gz\t1730000000    \t{t1}\t/data/op-agent/src\n\
                 test.py                  \t1730000100    \t{t2}\n"
            )
        );
        let mut out = Vec::new();
        packages_table(&[version("a.sh", 5, "/opt", false)], true, &[])
            .write(&mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let header = text.lines().next().unwrap();
        assert_eq!(
            header.split('\t').map(str::trim).collect::<Vec<_>>(),
            [
                "PACKAGENAME",
                "PACKAGEVERSION",
                "TIMESTAMP",
                "DEPLOYDIR",
                "CURRENT",
                "SIZE",
                "SHA256",
                "UPLOADER",
                "TARGET"
            ]
        );
        let sha = "0f".repeat(32);
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .split('\t')
                .map(str::trim)
                .collect::<Vec<_>>()
                .ends_with(&["2048", &sha, "admin", "everywhere"])
        );
        // A targeted version brings the TARGET column into the plain table.
        let mut db = version("schema.sql", 7, "", true);
        db.target = op_proto::package::parse_target(&[], &[], &["role=db".into()]).unwrap();
        let mut out = Vec::new();
        packages_table(&[db, version("a.sh", 5, "/opt", true)], false, &[])
            .write(&mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split('\t').map(str::trim).collect())
            .collect();
        assert_eq!(rows[0].last(), Some(&"TARGET"));
        assert_eq!(rows[1].last(), Some(&"label role=db"));
        assert_eq!(rows[2].last(), Some(&"everywhere"));
    }
}
