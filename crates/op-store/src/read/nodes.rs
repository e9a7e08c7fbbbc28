//! Node queries: by id, by hostname or IP, and the whole fleet (Ready first).

use std::net::IpAddr;

use op_proto::{NodeInfo, NodeStatus};
use rusqlite::{Connection, OptionalExtension};
use uuid::Uuid;

use crate::Store;
use crate::codec::{from_json, from_ms, like_escape};
use crate::error::Result;

pub(crate) fn by_id(conn: &Connection, id: Uuid) -> Result<Option<NodeInfo>> {
    // Cached: a heartbeat flush reads every node in one command.
    conn.prepare_cached("SELECT info FROM nodes WHERE node_id = ?1")?
        .query_row([id.to_string()], |r| r.get::<_, String>(0))
        .optional()?
        .map(|s| from_json("node", &s))
        .transpose()
}

pub(crate) fn all(conn: &Connection) -> Result<Vec<NodeInfo>> {
    Ok(all_with_index(conn)?.into_iter().map(|(n, _)| n).collect())
}

pub(crate) fn all_with_index(conn: &Connection) -> Result<Vec<(NodeInfo, u64)>> {
    let mut stmt =
        conn.prepare_cached("SELECT info, desired_index FROM nodes ORDER BY hostname, node_id")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })?;
    rows.map(|r| {
        let (info, index) = r?;
        Ok((from_json("node", &info)?, index))
    })
    .collect()
}

fn status_rank(s: NodeStatus) -> u8 {
    match s {
        NodeStatus::Ready => 0,
        NodeStatus::Degraded => 1,
        NodeStatus::NotReady => 2,
        NodeStatus::Left => 3,
    }
}

/// Ready first, then Degraded, NotReady, Left; by hostname within each group.
pub(crate) fn sort_fleet(nodes: &mut [NodeInfo]) {
    nodes.sort_by(|a, b| {
        (status_rank(a.status), &a.hostname, a.node_id).cmp(&(
            status_rank(b.status),
            &b.hostname,
            b.node_id,
        ))
    });
}

/// What the liveness check reads of a node: the columns written beside its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSeen {
    pub node_id: Uuid,
    pub hostname: String,
    pub status: NodeStatus,
    pub last_seen: chrono::DateTime<chrono::Utc>,
}

fn status_of(text: &str) -> Option<NodeStatus> {
    [
        NodeStatus::Ready,
        NodeStatus::Degraded,
        NodeStatus::NotReady,
        NodeStatus::Left,
    ]
    .into_iter()
    .find(|s| s.as_str() == text)
}

impl Store {
    /// Every node's id, hostname, status and last beat, from the columns written with its
    /// record, without decoding the record: the liveness check reads this every few seconds,
    /// and decoding every node's record was a fifth of an idle manager's CPU at 5,000 agents.
    pub fn nodes_seen(&self) -> Result<Vec<NodeSeen>> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT node_id, hostname, status, last_seen FROM nodes")?;
            let rows = stmt.query_map([], |r| {
                let bad = |col: usize, what: String| {
                    rusqlite::Error::FromSqlConversionFailure(
                        col,
                        rusqlite::types::Type::Text,
                        what.into(),
                    )
                };
                let id = r.get::<_, String>(0)?;
                let status = r.get::<_, String>(2)?;
                Ok(NodeSeen {
                    node_id: id
                        .parse()
                        .map_err(|_| bad(0, format!("node id {id:?} is not a UUID")))?,
                    hostname: r.get(1)?,
                    status: status_of(&status)
                        .ok_or_else(|| bad(2, format!("node {id}: unknown status {status:?}")))?,
                    last_seen: from_ms(r.get(3)?),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Every node, Ready first.
    pub fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let mut nodes = self.read(all)?;
        sort_fleet(&mut nodes);
        Ok(nodes)
    }

    pub fn node(&self, id: Uuid) -> Result<Option<NodeInfo>> {
        self.read(|conn| by_id(conn, id))
    }

    /// Nodes named by `key`: a node id, one of their IPs, or their hostname (case-insensitive).
    /// Ready first.
    pub fn find_nodes(&self, key: &str) -> Result<Vec<NodeInfo>> {
        if let Ok(id) = Uuid::parse_str(key) {
            return Ok(self.node(id)?.into_iter().collect());
        }
        let mut nodes = self.read(|conn| {
            let (sql, arg) = match key.parse::<IpAddr>() {
                Ok(ip) => (
                    "SELECT info FROM nodes WHERE ips LIKE ?1 ESCAPE '\\'",
                    format!("%,{},%", like_escape(&ip.to_string())),
                ),
                Err(_) => (
                    "SELECT info FROM nodes WHERE hostname = ?1 COLLATE NOCASE",
                    key.to_string(),
                ),
            };
            let mut stmt = conn.prepare_cached(sql)?;
            let rows = stmt.query_map([arg], |r| r.get::<_, String>(0))?;
            rows.map(|r| from_json("node", &r?))
                .collect::<Result<Vec<NodeInfo>>>()
        })?;
        sort_fleet(&mut nodes);
        Ok(nodes)
    }
}
