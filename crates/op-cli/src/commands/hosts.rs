//! Which nodes a HOST argument names, for the commands that take one (`logs JOB HOST`).
//!
//! A node is named by its hostname (any case), one of its IPs or its id. A loopback address or
//! `localhost` also names the node running on this machine (same hostname), because an agent
//! reports its real addresses, never 127.0.0.1, while an operator on the box types 127.0.0.1.
//! When nothing matches, the error lists the names closest to what was typed. Host selection for
//! fan-out (`--host 'web-*'`, CIDRs) is the manager's, in `op_proto::hosts`.

use std::net::IpAddr;

use op_proto::NodeInfo;

/// The nodes `host` names, given this machine's hostname.
pub fn matching<'a>(
    nodes: &'a [NodeInfo],
    host: &str,
    this_host: Option<&str>,
) -> Vec<&'a NodeInfo> {
    let host = host.trim();
    let named: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| {
            n.hostname.eq_ignore_ascii_case(host)
                || n.node_id.to_string() == host
                || n.ips.iter().any(|ip| ip.to_string() == host)
        })
        .collect();
    if !named.is_empty() || !names_this_machine(host) {
        return named;
    }
    match this_host {
        Some(me) => nodes
            .iter()
            .filter(|n| n.hostname.eq_ignore_ascii_case(me))
            .collect(),
        None => Vec::new(),
    }
}

fn names_this_machine(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// This machine's hostname, as an agent here reports it by default.
pub fn this_hostname() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
}

/// "no node matches HOST", with the hostnames and IPs closest to it.
pub fn no_match(nodes: &[NodeInfo], host: &str) -> anyhow::Error {
    let close = close_matches(nodes, host);
    let hint = if close.is_empty() {
        String::new()
    } else {
        format!("; close matches: {}", close.join(", "))
    };
    anyhow::anyhow!(
        "no node matches {host:?} (a hostname, an IP or a node id){hint}; see `agentcli get nodes`"
    )
}

/// Up to five hostnames or IPs that differ from `host` by a few edits or contain it.
fn close_matches(nodes: &[NodeInfo], host: &str) -> Vec<String> {
    let wanted = host.trim().to_ascii_lowercase();
    let mut scored: Vec<(usize, String)> = Vec::new();
    for n in nodes {
        let names =
            std::iter::once(n.hostname.clone()).chain(n.ips.iter().map(ToString::to_string));
        for name in names {
            let lower = name.to_ascii_lowercase();
            let distance = edit_distance(&wanted, &lower);
            let near = distance <= (wanted.chars().count() / 3).max(2);
            let contains =
                wanted.len() >= 3 && (lower.contains(&wanted) || wanted.contains(&lower));
            if (near || contains) && !scored.iter().any(|(_, s)| *s == name) {
                scored.push((distance, name));
            }
        }
    }
    scored.sort();
    scored.into_iter().take(5).map(|(_, s)| s).collect()
}

/// Levenshtein distance between two short strings.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(hostname: &str, ips: &[&str]) -> NodeInfo {
        serde_json::from_value(serde_json::json!({
            "node_id": uuid::Uuid::new_v4(),
            "hostname": hostname,
            "ips": ips,
            "agent_version": "0.1.0",
            "status": "Ready",
            "first_seen": "2026-01-01T00:00:00Z",
            "last_seen": "2026-01-01T00:00:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn names_ips_ids_and_this_machine() {
        let nodes = [
            node("web-01", &["10.0.0.1", "192.168.1.1"]),
            node("db-01", &["10.0.0.2"]),
        ];
        let names = |host: &str, me: Option<&str>| -> Vec<String> {
            matching(&nodes, host, me)
                .iter()
                .map(|n| n.hostname.clone())
                .collect()
        };
        assert_eq!(names("WEB-01", None), ["web-01"]);
        assert_eq!(names("192.168.1.1", None), ["web-01"]);
        assert_eq!(names(&nodes[1].node_id.to_string(), None), ["db-01"]);
        assert_eq!(names("127.0.0.1", Some("db-01")), ["db-01"]);
        assert_eq!(names("localhost", Some("db-01")), ["db-01"]);
        assert!(names("127.0.0.1", Some("elsewhere")).is_empty());
        assert!(names("10.0.0.9", Some("db-01")).is_empty());
    }

    #[test]
    fn close_matches_for_a_typo() {
        let nodes = [node("web-01", &["10.0.0.1"]), node("db-01", &["10.0.0.2"])];
        let err = no_match(&nodes, "web-10").to_string();
        assert!(err.contains("close matches: web-01"), "{err}");
        assert!(!err.contains("db-01"), "{err}");
        let err = no_match(&nodes, "mail").to_string();
        assert!(!err.contains("close matches"), "{err}");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
