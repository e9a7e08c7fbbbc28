//! Package queries: the current version of every package, all versions of one, one version, and
//! the set of blobs (by sha256) that some version still refers to.

use std::collections::BTreeSet;

use op_proto::HostSelector;
use op_proto::package::{PackageRef, PackageVersion};
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row};

use crate::Store;
use crate::codec::from_ms;
use crate::error::Result;

const COLUMNS: &str = "v.name, v.version, v.sha256, v.size, v.deploy_dir, v.uploaded_at, \
                       v.uploader, (p.current = v.version), v.target";

fn row(r: &Row<'_>) -> rusqlite::Result<PackageVersion> {
    Ok(PackageVersion {
        name: r.get(0)?,
        version: r.get::<_, i64>(1)? as u64,
        sha256: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        deploy_dir: r.get(4)?,
        uploaded_at: from_ms(r.get(5)?),
        uploader: r.get(6)?,
        current: r.get::<_, i64>(7)? != 0,
        target: {
            let text: String = r.get(8)?;
            if text.is_empty() {
                HostSelector::default()
            } else {
                serde_json::from_str(&text).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(8, Type::Text, Box::new(e))
                })?
            }
        },
    })
}

/// The current version of every package, by name.
pub(crate) fn current(conn: &Connection) -> Result<Vec<PackageVersion>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM packages p
         JOIN package_versions v ON v.name = p.name AND v.version = p.current
         ORDER BY p.name"
    ))?;
    let rows = stmt.query_map([], row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The current version of each package with the hosts it goes to: a node holds the ones whose
/// targeting matches it.
pub(crate) fn desired(conn: &Connection) -> Result<Vec<(PackageRef, HostSelector)>> {
    Ok(current(conn)?
        .into_iter()
        .map(|v| (v.to_ref(), v.target))
        .collect())
}

pub(crate) fn current_version(conn: &Connection, name: &str) -> Result<Option<u64>> {
    Ok(conn
        .query_row(
            "SELECT current FROM packages WHERE name = ?1",
            [name],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .map(|v| v as u64))
}

pub(crate) fn version(
    conn: &Connection,
    name: &str,
    version: u64,
) -> Result<Option<PackageVersion>> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {COLUMNS} FROM package_versions v JOIN packages p ON p.name = v.name
                 WHERE v.name = ?1 AND v.version = ?2"
            ),
            rusqlite::params![name, version as i64],
            row,
        )
        .optional()?)
}

fn versions(conn: &Connection, name: &str) -> Result<Vec<PackageVersion>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM package_versions v JOIN packages p ON p.name = v.name
         WHERE v.name = ?1 ORDER BY v.version"
    ))?;
    let rows = stmt.query_map([name], row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

impl Store {
    /// The current version of every package, by name.
    pub fn packages(&self) -> Result<Vec<PackageVersion>> {
        self.read(current)
    }

    /// Every stored version of `name`, oldest first (empty when the package does not exist).
    pub fn package_versions(&self, name: &str) -> Result<Vec<PackageVersion>> {
        self.read(|conn| versions(conn, name))
    }

    pub fn package_version(&self, name: &str, v: u64) -> Result<Option<PackageVersion>> {
        self.read(|conn| version(conn, name, v))
    }

    /// Every sha256 some stored version refers to: blob files outside this set are garbage.
    pub fn referenced_blobs(&self) -> Result<BTreeSet<String>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT DISTINCT sha256 FROM package_versions")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<rusqlite::Result<BTreeSet<_>>>()?)
        })
    }
}
