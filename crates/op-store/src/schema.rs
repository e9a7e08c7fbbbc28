//! The SQLite schema and its migrations, keyed by `PRAGMA user_version`.
//!
//! Each entry of [`MIGRATIONS`] moves the schema one version up and runs in the same transaction
//! that records the new version, so a crash never leaves a half-migrated file. Never edit a
//! migration that has shipped: add a new one. (rusqlite_migration does not resolve beside
//! rusqlite 0.43, and thirty lines do the job.)

use std::path::Path;

use rusqlite::Connection;

use crate::error::{Result, StoreError};

/// Schema version `n + 1` is reached by running `MIGRATIONS[n]`.
const MIGRATIONS: &[&str] = &[
    // 1: jobs, nodes, once-job targets, runs, tokens, audit, meta.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    -- A deleted job keeps its row (deleted = 1) so that a job saved again under the same name
    -- continues its revision numbers: agents key once-job outcomes by (job, revision).
    CREATE TABLE jobs (
        name       TEXT PRIMARY KEY,
        spec       TEXT NOT NULL,
        revision   INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        updated_by TEXT NOT NULL,
        deleted    INTEGER NOT NULL DEFAULT 0
    );
    -- `info` is the full NodeInfo as JSON; the other columns are copies for queries.
    -- `ips` is ",ip1,ip2," so that one IP matches exactly with LIKE '%,ip,%'.
    CREATE TABLE nodes (
        node_id       TEXT PRIMARY KEY,
        hostname      TEXT NOT NULL,
        ips           TEXT NOT NULL,
        status        TEXT NOT NULL,
        last_seen     INTEGER NOT NULL,
        desired_index INTEGER NOT NULL DEFAULT 0,
        info          TEXT NOT NULL
    );
    CREATE INDEX nodes_hostname ON nodes(hostname COLLATE NOCASE);
    CREATE TABLE once_targets (
        job        TEXT NOT NULL,
        revision   INTEGER NOT NULL,
        node_id    TEXT NOT NULL,
        hostname   TEXT NOT NULL,
        state      TEXT NOT NULL,
        run_id     TEXT,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (job, revision, node_id)
    );
    CREATE INDEX once_targets_node ON once_targets(node_id, state);
    -- `record` is the full RunRecord as JSON; `bytes` its length, for the global byte budget.
    -- `sort_at` orders runs: started, else planned, else ended, else ingested (unix ms).
    CREATE TABLE runs (
        run_id        TEXT PRIMARY KEY,
        job           TEXT NOT NULL,
        revision      INTEGER NOT NULL,
        node_id       TEXT NOT NULL,
        hostname      TEXT NOT NULL,
        ips           TEXT NOT NULL,
        trigger       TEXT NOT NULL,
        status        TEXT NOT NULL,
        invocation_id TEXT,
        sort_at       INTEGER NOT NULL,
        bytes         INTEGER NOT NULL,
        record        TEXT NOT NULL
    );
    CREATE INDEX runs_job_node ON runs(job, node_id, sort_at);
    CREATE INDEX runs_node ON runs(node_id, sort_at);
    CREATE INDEX runs_sort ON runs(sort_at);
    CREATE INDEX runs_invocation ON runs(invocation_id) WHERE invocation_id IS NOT NULL;
    CREATE TABLE tokens (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        scope      TEXT NOT NULL,
        hash       TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        revoked    INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE audit (
        id     INTEGER PRIMARY KEY AUTOINCREMENT,
        at     INTEGER NOT NULL,
        actor  TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX audit_at ON audit(at);
    "#,
    // 2: packages. `last_version` is the highest version ever given to the package, so a version
    // number is never reused even after that version was deleted (agents key downloads and
    // installed trees by (name, version)).
    r#"
    CREATE TABLE packages (
        name         TEXT PRIMARY KEY,
        current      INTEGER NOT NULL,
        last_version INTEGER NOT NULL
    );
    CREATE TABLE package_versions (
        name        TEXT NOT NULL,
        version     INTEGER NOT NULL,
        sha256      TEXT NOT NULL,
        size        INTEGER NOT NULL,
        deploy_dir  TEXT NOT NULL,
        uploaded_at INTEGER NOT NULL,
        uploader    TEXT NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE INDEX package_versions_sha256 ON package_versions(sha256);
    "#,
    // 3: fan-out invocations and their per-host targets.
    r#"
    -- `record` is the InvocationDetail as JSON (spec, revision, params, options, unreachable).
    -- `state`: running | finished. `stopped`: why pending hosts were cancelled, if they were.
    CREATE TABLE invocations (
        id          TEXT PRIMARY KEY,
        job         TEXT NOT NULL,
        kind        TEXT NOT NULL,
        state       TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        created_by  TEXT NOT NULL,
        finished_at INTEGER,
        stopped     TEXT,
        record      TEXT NOT NULL
    );
    CREATE INDEX invocations_state ON invocations(state);
    CREATE INDEX invocations_created ON invocations(created_at);
    -- One row per targeted host. `status` is a HostStatus: pending (not released), running (its
    -- directive is out; `kill` = 1 once a kill was asked for), or final. While running, the row
    -- is a directive of its node.
    CREATE TABLE invocation_targets (
        run_id        TEXT PRIMARY KEY,
        invocation_id TEXT NOT NULL,
        seq           INTEGER NOT NULL,
        batch         INTEGER NOT NULL,
        node_id       TEXT NOT NULL,
        hostname      TEXT NOT NULL,
        ips           TEXT NOT NULL,
        status        TEXT NOT NULL,
        kill          INTEGER NOT NULL DEFAULT 0,
        released_at   INTEGER,
        not_after     INTEGER,
        finished_at   INTEGER,
        -- The raft log index of the command that made the status final: a waiting caller asks
        -- for what settled after the index it last saw (monotonic, unlike clocks).
        settled_index INTEGER,
        detail        TEXT
    );
    CREATE INDEX invocation_targets_inv ON invocation_targets(invocation_id, seq);
    CREATE INDEX invocation_targets_running ON invocation_targets(node_id) WHERE status = 'running';
    -- A waiting caller reads only what settled since its last look, and how many are open.
    CREATE INDEX invocation_targets_settled ON invocation_targets(invocation_id, settled_index);
    CREATE INDEX invocation_targets_open ON invocation_targets(invocation_id)
        WHERE status IN ('pending', 'running');
    "#,
    // 4: requests for a run's output file (agentcli logs --follow/--full, the console), written
    // through raft up to release 0.1.0. Unused since (the requests stay in the manager's memory);
    // `Prune` empties it.
    r#"
    CREATE TABLE output_requests (
        request_id TEXT PRIMARY KEY,
        node_id    TEXT NOT NULL,
        run_id     TEXT NOT NULL,
        offset     INTEGER NOT NULL,
        reply_to   TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX output_requests_node ON output_requests(node_id);
    CREATE INDEX output_requests_created ON output_requests(created_at);
    "#,
    // 5: per-node agent credentials (issued at enrollment, revoked when the node is forgotten).
    r#"
    ALTER TABLE tokens ADD COLUMN node_id TEXT;
    CREATE INDEX tokens_node ON tokens(node_id);
    "#,
    // 6: the name check of every new token (one per enrolled node) reads this index instead of
    // the whole table.
    r#"
    CREATE INDEX tokens_active_name ON tokens(name) WHERE revoked = 0;
    "#,
    // 7: the jobs each node was given before their selection (or the node's identity) changed,
    // so a run of such a job that arrives later is still accepted while a run of a job the node
    // was never given is refused. What the current selection gives a node is not written here;
    // it is what the selector matches now.
    r#"
    CREATE TABLE node_selections (
        node_id TEXT NOT NULL,
        job     TEXT NOT NULL,
        PRIMARY KEY (node_id, job)
    ) WITHOUT ROWID;
    "#,
    // 8: events (issue 19). `incidents` holds the one `IncidentState` (JSON) that derives them
    // from applied commands; `events` is the derived log, bounded (see `apply::events`).
    r#"
    CREATE TABLE incidents (
        id    INTEGER PRIMARY KEY CHECK (id = 1),
        state TEXT NOT NULL
    );
    CREATE TABLE events (
        id     INTEGER PRIMARY KEY,
        time   INTEGER NOT NULL,
        kind   TEXT NOT NULL,
        job    TEXT,
        record TEXT NOT NULL
    );
    CREATE INDEX events_time ON events(time);
    "#,
    // 9: notification rules (issue 19; 8 is the event log). `rule` is the NotifyRule as JSON:
    // its filter and channel, never a credential (only the paths of files each manager reads).
    r#"
    CREATE TABLE notify_rules (
        name       TEXT PRIMARY KEY,
        rule       TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        updated_by TEXT NOT NULL
    );
    "#,
    // 10: notification delivery (issue 19): per rule, the event id up to which its receiver has
    // acknowledged (a new rule starts at the newest event, it does not replay history) and the
    // channel's health as the leader's delivery worker last committed it. Times are unix ms.
    r#"
    CREATE TABLE notify_delivery (
        rule          TEXT PRIMARY KEY,
        acknowledged  INTEGER NOT NULL,
        last_success  INTEGER,
        failures      INTEGER NOT NULL DEFAULT 0,
        last_error    TEXT,
        last_failure  INTEGER
    );
    "#,
    // 11: fan-out acknowledgements (issue 25). `ack_by`: while a target runs, the time its agent
    // must have acknowledged the directive by, else it is `unresponsive`; NULL once acknowledged
    // or when its agent does not acknowledge directives.
    r#"
    ALTER TABLE invocation_targets ADD COLUMN ack_by INTEGER;
    "#,
    // 12: secrets (issue 24), sealed by the manager that proposed them: hex nonce and
    // ciphertext (AEAD, the name as associated data) and the id of the key. Never a value.
    r#"
    CREATE TABLE secrets (
        name       TEXT PRIMARY KEY,
        key_id     TEXT NOT NULL,
        nonce      TEXT NOT NULL,
        ciphertext TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        updated_by TEXT NOT NULL
    );
    "#,
    // once-jobs for hosts that join later (`NewHosts`, issue 23): `late` = 1 for a target added
    // after the save (its host registered or came to match later), `seq` its arrival order within
    // the revision. A late target is 'waiting' until admitted (then 'pending'), so no more than
    // the job's `NewHostsAtOnce` late hosts are pending or running at once.
    r#"
    ALTER TABLE once_targets ADD COLUMN late INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE once_targets ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX once_targets_waiting ON once_targets(job, revision) WHERE state = 'waiting';
    "#,
    // Token policies (job globs, host selectors, verbs) as JSON; NULL = no policy.
    r#"
    ALTER TABLE tokens ADD COLUMN policy TEXT;
    "#,
    // pauses and maintenance windows (issue 23): each a JSON `op_proto::holds` record. A pause
    // is keyed by its scope's text (`all`, `job=NAME`, `label:k=v`): pausing it again replaces it.
    r#"
    CREATE TABLE pauses (
        scope TEXT PRIMARY KEY,
        info  TEXT NOT NULL
    );
    CREATE TABLE windows (
        name TEXT PRIMARY KEY,
        info TEXT NOT NULL
    );
    "#,
    // package targeting (issue 21 item 5): the hosts a version goes to, an
    // `op_proto::HostSelector` as JSON; '' = every host (every version stored before).
    r#"
    ALTER TABLE package_versions ADD COLUMN target TEXT NOT NULL DEFAULT '';
    "#,
    // staged rollouts (issue 21): one row per rollout of a package version or job revision.
    // `threshold`: ranks at or below are admitted (the u64 rank stored bit for bit as an
    // INTEGER), NULL = nobody. `previous_job`: the JobRecord (JSON) hosts outside the admitted
    // stages keep, for a job rollout; `plan` the RolloutPlan (JSON).
    r#"
    CREATE TABLE rollouts (
        id               TEXT PRIMARY KEY,
        kind             TEXT NOT NULL,
        subject          TEXT NOT NULL,
        version          INTEGER NOT NULL,
        previous         INTEGER,
        previous_job     TEXT,
        plan             TEXT NOT NULL,
        state            TEXT NOT NULL,
        stage            INTEGER NOT NULL,
        threshold        INTEGER,
        created_at       INTEGER NOT NULL,
        created_by       TEXT NOT NULL,
        stage_entered_at INTEGER NOT NULL,
        counted_from     INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL,
        reason           TEXT
    );
    CREATE INDEX rollouts_subject ON rollouts(kind, subject);
    "#,
    // A package's default rollout (issue 21): what an upload without --rollout is staged by.
    r#"
    CREATE TABLE package_rollouts (
        name   TEXT PRIMARY KEY,
        plan   TEXT NOT NULL,
        set_at INTEGER NOT NULL,
        set_by TEXT NOT NULL
    );
    "#,
    // The open fires of the incident state as rows (issue 25): a batch writes the results it
    // applied instead of the whole state. `id` is the fire's row in the state (local to this
    // member), `key` the FireKey and `first_result` its time (JSON), `result` an (Outcome, Labels)
    // pair (JSON). A `fires` list kept inside the state until now moves here.
    r#"
    CREATE TABLE incident_fires (
        id           INTEGER PRIMARY KEY,
        key          TEXT NOT NULL,
        first_result TEXT NOT NULL
    );
    CREATE TABLE incident_fire_results (
        fire   INTEGER NOT NULL,
        host   TEXT NOT NULL,
        result TEXT NOT NULL,
        PRIMARY KEY (fire, host)
    ) WITHOUT ROWID;
    INSERT INTO incident_fires(id, key, first_result)
        SELECT f.key, json_extract(f.value, '$.key'),
               json_quote(json_extract(f.value, '$.first_result'))
        FROM incidents i, json_each(i.state, '$.fires') f;
    INSERT INTO incident_fire_results(fire, host, result)
        SELECT f.key, r.key, r.value
        FROM incidents i, json_each(i.state, '$.fires') f, json_each(f.value, '$.results') r;
    UPDATE incidents SET state = json_remove(state, '$.fires');
    "#,
    // The agents' outbox depth and dropped runs as columns (issue 25): every `/metrics` scrape
    // sums them over the fleet, which parsed every node's JSON (15 % of a manager's CPU while
    // 17,000 agents took saves, op-bench scraping twice a save). Written with the record. The
    // index covers the scrape's sums and its count by status: the table's rows are a node's
    // whole record each, so a scan of them reads every page of every record.
    r#"
    ALTER TABLE nodes ADD COLUMN outbox_depth INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE nodes ADD COLUMN dropped_runs INTEGER NOT NULL DEFAULT 0;
    UPDATE nodes SET
        outbox_depth = COALESCE(json_extract(info, '$.stats.outbox_depth'), 0),
        dropped_runs = COALESCE(json_extract(info, '$.stats.dropped_runs'), 0);
    CREATE INDEX nodes_stats ON nodes(status, outbox_depth, dropped_runs);
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database at `path` (already open as `conn`) up to [`SCHEMA_VERSION`].
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
