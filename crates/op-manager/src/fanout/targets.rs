//! Which hosts an invocation runs on: the Ready nodes its selection matches (and, for a job, that
//! the job's own host selection allows), in hostname order. Selected hosts that cannot run it are
//! reported at once rather than silently dropped, so the caller sees the whole picture: a listed
//! host that matches no node, and any matched node that is NotReady.

use op_proto::hosts::HostSelector;
use op_proto::invoke::Selection;
use op_proto::{NodeInfo, NodeStatus};
use op_store::MissingHost;

/// The outcome of selecting hosts.
#[derive(Debug, Clone, Default)]
pub struct Selected {
    /// Ready nodes that will run it, by hostname.
    pub targets: Vec<NodeInfo>,
    /// Hosts reported `unreachable` from the start.
    pub unreachable: Vec<MissingHost>,
}

/// Selects among `nodes`. With `job` (a job run with an explicit selection), a host must also be
/// selected by the job; naming a host the job excludes is an error, because running a job where
/// its author said it must not run is never what the caller meant.
pub fn select(
    nodes: &[NodeInfo],
    selection: &Selection,
    job: Option<&HostSelector>,
) -> Result<Selected, String> {
    let live: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| n.status != NodeStatus::Left)
        .collect();
    let mut out = Selected::default();
    let mut excluded = Vec::new();
    for entry in &selection.named {
        let matching: Vec<&&NodeInfo> = live
            .iter()
            .filter(|n| entry.matches(&n.identity()))
            .collect();
        if matching.is_empty() {
            out.unreachable.push(MissingHost {
                host: entry.as_str().to_string(),
                reason: "no node has this hostname or IP".into(),
            });
        } else if let Some(job) = job
            && matching.iter().all(|n| !job.matches(&n.identity()))
        {
            excluded.push(entry.as_str().to_string());
        }
    }
    if !excluded.is_empty() {
        return Err(format!(
            "the job's own host selection (WhiteHosts, BlackHosts, Labels) excludes {}",
            excluded.join(", ")
        ));
    }
    let mut chosen: Vec<&NodeInfo> = live
        .into_iter()
        .filter(|n| {
            let id = n.identity();
            selection.matches(&id) && job.is_none_or(|j| j.matches(&id))
        })
        .collect();
    chosen.sort_by(|a, b| (&a.hostname, a.node_id).cmp(&(&b.hostname, b.node_id)));
    for node in chosen {
        if node.status.is_live() && node.drain.is_some() {
            // A drained node starts nothing new (issue 23): reported at once, never waited for.
            out.unreachable.push(MissingHost {
                host: node.hostname.clone(),
                reason: "node draining (agentcli undrain to run here again)".into(),
            });
        } else if node.status.is_live() {
            out.targets.push(node.clone());
        } else {
            out.unreachable.push(MissingHost {
                host: node.hostname.clone(),
                reason: format!(
                    "node is {} (last seen {})",
                    node.status.as_str(),
                    node.last_seen
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            });
        }
    }
    Ok(out)
}

/// A job's own host selection as an invocation selection: its specific white entries are named
/// (so an unknown one is reported), the rest are patterns.
pub fn of_job(job: &HostSelector) -> Selection {
    let (named, white) = job.white.iter().cloned().partition(|p| p.is_specific());
    Selection {
        named,
        white,
        black: job.black.clone(),
        labels: job.labels.clone(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use op_proto::HostPattern;
    use op_proto::invoke::InvokeRequest;
    use uuid::Uuid;

    use super::*;

    fn node(n: u8, status: NodeStatus) -> NodeInfo {
        NodeInfo {
            node_id: Uuid::from_u128(u128::from(n)),
            hostname: format!("node-{n}"),
            ips: vec![format!("10.0.0.{n}").parse().unwrap()],
            labels: Default::default(),
            manager_labels: Default::default(),
            facts: None,
            agent_version: "t".into(),
            os: String::new(),
            arch: String::new(),
            machine_id: String::new(),
            status,
            first_seen: Utc::now(),
            last_seen: Utc::now(),
            load: None,
            running: vec![],
            packages: vec![],
            stats: Default::default(),
            degraded: None,
            clock_skew_ms: None,
            capabilities: Vec::new(),
            drain: None,
        }
    }

    fn fleet() -> Vec<NodeInfo> {
        vec![
            node(3, NodeStatus::Ready),
            node(1, NodeStatus::Ready),
            node(2, NodeStatus::NotReady),
            node(4, NodeStatus::Left),
        ]
    }

    fn sel(req: InvokeRequest) -> Selection {
        Selection::from_request(&req).unwrap()
    }

    fn names(s: &Selected) -> (Vec<String>, Vec<String>) {
        (
            s.targets.iter().map(|n| n.hostname.clone()).collect(),
            s.unreachable.iter().map(|m| m.host.clone()).collect(),
        )
    }

    #[test]
    fn all_targets_ready_nodes_and_reports_not_ready_ones() {
        let s = select(
            &fleet(),
            &sel(InvokeRequest {
                all: true,
                ..Default::default()
            }),
            None,
        )
        .unwrap();
        assert_eq!(
            names(&s),
            (
                vec!["node-1".into(), "node-3".into()],
                vec!["node-2".into()]
            )
        );
        assert!(s.unreachable[0].reason.starts_with("node is NotReady"));
    }

    #[test]
    fn named_hosts_unknown_or_left_are_unreachable() {
        let s = select(
            &fleet(),
            &sel(InvokeRequest {
                hosts: vec!["10.0.0.1".into(), "node-4".into(), "10.0.0.10".into()],
                ..Default::default()
            }),
            None,
        )
        .unwrap();
        assert_eq!(
            names(&s),
            (
                vec!["node-1".into()],
                vec!["node-4".into(), "10.0.0.10".into()]
            )
        );
    }

    #[test]
    fn a_job_selection_narrows_and_refuses_excluded_named_hosts() {
        let job = HostSelector {
            black: vec![HostPattern::parse("node-3").unwrap()],
            ..HostSelector::default()
        };
        let all = sel(InvokeRequest {
            all: true,
            ..Default::default()
        });
        let s = select(&fleet(), &all, Some(&job)).unwrap();
        assert_eq!(names(&s).0, ["node-1"]);
        let named = sel(InvokeRequest {
            hosts: vec!["node-3".into()],
            ..Default::default()
        });
        let err = select(&fleet(), &named, Some(&job)).unwrap_err();
        assert!(err.ends_with("excludes node-3"), "{err}");
        // Without a request selection the job's own applies, unknown entries reported.
        let own = HostSelector {
            white: vec![
                HostPattern::parse("node-1").unwrap(),
                HostPattern::parse("ghost").unwrap(),
                HostPattern::parse("10.0.0.0/30").unwrap(),
            ],
            ..HostSelector::default()
        };
        let s = select(&fleet(), &of_job(&own), None).unwrap();
        assert_eq!(
            names(&s),
            (
                vec!["node-1".into(), "node-3".into()],
                vec!["ghost".into(), "node-2".into()]
            )
        );
    }
}
