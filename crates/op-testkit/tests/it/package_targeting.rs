//! Package targeting (issue 21 item 5): `agentcli upload --label/--host/--exclude` sends a
//! version only to the hosts it targets (checked on each agent's disk, not only in the reports),
//! `analysis packages` counts only those, a label set later brings the package, a host that
//! stops being targeted keeps its files and stops reporting the package, a new upload without
//! targeting goes everywhere again, and bad targeting is a clear 4xx with nothing stored.

use op_client::{ClientError, UploadTarget};
use op_testkit::{Agent, AgentOptions, Manager, wait_until};

use crate::support::{LONG, agentcli, text};

/// Starts `node-1..n`; `labels[i]` are node-(i+1)'s own labels. Waits until all are Ready.
async fn agents(m: &Manager, labels: &[&[&str]]) -> Vec<Agent> {
    let agents: Vec<Agent> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut o =
                AgentOptions::new(&format!("node-{}", i + 1), &format!("127.0.0.{}", i + 2))
                    .manager(m);
            o.labels = l.iter().map(|s| s.to_string()).collect();
            Agent::start(o)
        })
        .collect();
    let c = m.client();
    wait_until(LONG, "every agent Ready", || async {
        c.list_nodes().await.is_ok_and(|nodes| {
            nodes
                .iter()
                .filter(|n| n.status == op_proto::NodeStatus::Ready)
                .count()
                == labels.len()
        })
    })
    .await;
    agents
}

/// What `agent` has on disk at `DEPLOYDIR/name` (its default deploy dir).
fn on_disk(agent: &Agent, name: &str) -> Option<String> {
    std::fs::read_to_string(agent.deploy_dir().join(name)).ok()
}

/// Uploads `content` as `name` with `flags`; returns the version.
async fn upload(
    m: &Manager,
    dir: &std::path::Path,
    name: &str,
    content: &str,
    flags: &[&str],
) -> u64 {
    let file = dir.join(name);
    std::fs::write(&file, content).unwrap();
    let mut args = vec!["upload", file.to_str().unwrap(), ""];
    args.extend_from_slice(flags);
    let out = agentcli(m, &args).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.split('\t').nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no version in {}", text(&out.stdout)))
}

/// Waits until `analysis packages` prints `line` (and exits 0: nobody targeted is behind).
async fn analysis_says(m: &Manager, line: &str) -> String {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let out = agentcli(m, &["analysis", "packages"]).await;
        let last = format!("{}{}", text(&out.stdout), text(&out.stderr));
        // Each line ends with where the bytes came from (", from peers: X %"): judge the counts.
        if out.status.code() == Some(0)
            && last
                .lines()
                .any(|l| l.split(", from peers:").next() == Some(line))
        {
            return last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "analysis packages never said {line:?}; last:\n{last}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The packages `node` reports holding.
async fn reported(m: &Manager, node: &str) -> Vec<String> {
    m.client()
        .get_node(node)
        .await
        .unwrap()
        .packages
        .into_iter()
        .map(|p| p.name)
        .collect()
}

#[tokio::test]
async fn a_package_labelled_role_db_reaches_only_the_db_hosts_and_analysis_counts_only_them() {
    let m = Manager::start();
    // node-1 and node-3 are db hosts by their own config; node-2 and node-4 are not.
    let a = agents(&m, &[&["role=db"], &["role=web"], &["role=db"], &[]]).await;
    let work = tempfile::tempdir().unwrap();
    let v1 = upload(
        &m,
        work.path(),
        "schema.sql",
        "CREATE TABLE t;\n",
        &["--label", "role=db"],
    )
    .await;
    // An untargeted package uploaded after it: once every host has it, every host has also
    // received the desired state that held schema.sql, so its absence on a host means something.
    let all = upload(&m, work.path(), "all.sh", "echo all\n", &[]).await;
    let summary = analysis_says(&m, &format!("all.sh {all}: 4/4 hosts current")).await;
    assert!(
        summary.lines().any(|l| l.starts_with(&format!(
            "schema.sql {v1} (label role=db): 2/2 hosts current,"
        ))),
        "only the two db hosts count, and none is missing or failed:\n{summary}"
    );
    for (agent, db) in a.iter().zip([true, false, true, false]) {
        assert_eq!(on_disk(agent, "all.sh").as_deref(), Some("echo all\n"));
        let name = &agent.options.node_name;
        assert_eq!(
            on_disk(agent, "schema.sql").as_deref(),
            db.then_some("CREATE TABLE t;\n"),
            "{name}"
        );
        assert_eq!(
            reported(&m, name).await.contains(&"schema.sql".to_string()),
            db,
            "{name}"
        );
    }
    // `get packages` shows the targeting.
    let out = agentcli(&m, &["get", "packages"]).await;
    let listed = text(&out.stdout);
    let header: Vec<&str> = listed
        .lines()
        .next()
        .unwrap()
        .split('\t')
        .map(str::trim)
        .collect();
    assert_eq!(header.last(), Some(&"TARGET"), "{listed}");
    let row = listed
        .lines()
        .find(|l| l.starts_with("schema.sql"))
        .unwrap();
    assert!(row.trim_end().ends_with("label role=db"), "{listed}");
    let row = listed.lines().find(|l| l.starts_with("all.sh")).unwrap();
    assert!(row.trim_end().ends_with("everywhere"), "{listed}");

    // A manager label makes node-4 a db host: it receives the package without a restart.
    let out = agentcli(&m, &["label", "node-4", "role=db"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    wait_until(LONG, "node-4 deploys schema.sql", || async {
        on_disk(&a[3], "schema.sql").is_some()
    })
    .await;
    analysis_says(
        &m,
        &format!("schema.sql {v1} (label role=db): 3/3 hosts current"),
    )
    .await;

    // Targeting belongs to the version: a new upload without flags goes to every host.
    let v2 = upload(&m, work.path(), "schema.sql", "CREATE TABLE t2;\n", &[]).await;
    analysis_says(&m, &format!("schema.sql {v2}: 4/4 hosts current")).await;
    for agent in &a {
        assert_eq!(
            on_disk(agent, "schema.sql").as_deref(),
            Some("CREATE TABLE t2;\n")
        );
    }
}

#[tokio::test]
async fn host_and_exclude_target_a_version_and_a_host_left_out_later_keeps_its_files() {
    let m = Manager::start();
    let a = agents(&m, &[&[], &[], &[]]).await;
    let work = tempfile::tempdir().unwrap();
    let v1 = upload(
        &m,
        work.path(),
        "tool.sh",
        "echo one\n",
        &["--host", "node-*", "--exclude", "node-2"],
    )
    .await;
    let marker = upload(&m, work.path(), "marker", "m\n", &[]).await;
    let summary = analysis_says(&m, &format!("marker {marker}: 3/3 hosts current")).await;
    assert!(
        summary.lines().any(|l| l.starts_with(&format!(
            "tool.sh {v1} (host node-* exclude node-2): 2/2 hosts current,"
        ))),
        "{summary}"
    );
    assert_eq!(on_disk(&a[0], "tool.sh").as_deref(), Some("echo one\n"));
    assert_eq!(on_disk(&a[1], "tool.sh"), None, "node-2 is excluded");
    assert_eq!(on_disk(&a[2], "tool.sh").as_deref(), Some("echo one\n"));

    // The next version goes to node-2 only (by IP). node-1 and node-3 are no longer targeted:
    // they stop reporting tool.sh and keep the files they have (jobs may still use them).
    let v2 = upload(
        &m,
        work.path(),
        "tool.sh",
        "echo two\n",
        &["-H", "127.0.0.3"],
    )
    .await;
    analysis_says(
        &m,
        &format!("tool.sh {v2} (host 127.0.0.3): 1/1 hosts current"),
    )
    .await;
    assert_eq!(on_disk(&a[1], "tool.sh").as_deref(), Some("echo two\n"));
    for (agent, node) in [(&a[0], "node-1"), (&a[2], "node-3")] {
        wait_until(LONG, &format!("{node} stops reporting tool.sh"), || async {
            !reported(&m, node).await.contains(&"tool.sh".to_string())
        })
        .await;
        assert_eq!(
            on_disk(agent, "tool.sh").as_deref(),
            Some("echo one\n"),
            "{node}"
        );
    }
}

#[tokio::test]
async fn bad_targeting_is_a_clear_4xx_and_nothing_is_stored() {
    let m = Manager::start();
    let c = m.client();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("bad.sh");
    std::fs::write(&file, "echo\n").unwrap();
    let path = file.to_str().unwrap();
    // agentcli checks before sending anything.
    for (flags, says) in [
        (
            &["--label", "role"][..],
            "--label \"role\" is not KEY=VALUE",
        ),
        (&["--label", "ro le=db"][..], "label key"),
        (
            &["--host", "10.0.0.999"][..],
            "--host host entry \"10.0.0.999\"",
        ),
        (
            &["--exclude", "fact.cpus>=many"][..],
            "--exclude host entry",
        ),
    ] {
        let mut args = vec!["upload", path];
        args.extend_from_slice(flags);
        let out = agentcli(&m, &args).await;
        assert_ne!(out.status.code(), Some(0), "{flags:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{flags:?}: {}",
            text(&out.stderr)
        );
    }
    // The manager refuses the same on its own (a client that does not check).
    for (target, code, says) in [
        (
            UploadTarget {
                labels: vec!["role".into()],
                ..Default::default()
            },
            "invalid_target",
            "is not KEY=VALUE",
        ),
        (
            UploadTarget {
                hosts: vec!["label.=db".into()],
                ..Default::default()
            },
            "invalid_target",
            "the label key is missing",
        ),
        (
            UploadTarget {
                exclude: vec!["300.1.1.1".into()],
                ..Default::default()
            },
            "invalid_target",
            "not a valid IP address",
        ),
    ] {
        let err = c
            .upload_package_bytes_targeted("bad.sh", None, &target, b"echo\n".to_vec())
            .await
            .unwrap_err();
        let ClientError::Api { status, body } = err else {
            panic!("{target:?}: {err}")
        };
        assert_eq!((status, body.code.as_str()), (400, code), "{target:?}");
        assert!(body.message.contains(says), "{target:?}: {}", body.message);
    }
    // An unknown query parameter is refused too, not ignored.
    let resp = reqwest::Client::new()
        .put(format!("{}/v1/packages/bad.sh?hosts=node-1", m.api_url))
        .bearer_auth(&m.admin_token)
        .body("echo\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("unknown query parameter \\\"hosts\\\"")
    );
    // Nothing stored: no package, no version, no blob.
    assert!(c.list_packages().await.unwrap().is_empty());
    assert!(c.package_versions("bad.sh").await.is_err());
    let blobs = m.data_dir().join("blobs");
    let stored = std::fs::read_dir(&blobs)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
                })
                .count()
        })
        .unwrap_or(0);
    assert_eq!(stored, 0, "no blob in {}", blobs.display());
}

#[tokio::test]
async fn a_host_limited_token_uploads_only_versions_targeted_within_its_hosts() {
    let m = Manager::start();
    let admin = m.client();
    let team = admin
        .create_policy_token(&op_proto::api::CreatePolicyTokenRequest {
            name: "db-team".into(),
            scope: op_proto::api::Scope::Operator,
            expires_in_secs: None,
            policy: Some(op_proto::policy::TokenPolicy {
                hosts: vec!["label.role=db".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let t = m.client_with(&team.secret);
    let everywhere = UploadTarget::default();
    let err = t
        .upload_package_bytes_targeted("schema.sql", None, &everywhere, b"x\n".to_vec())
        .await
        .unwrap_err();
    let ClientError::Api { status, body } = err else {
        panic!("{err}")
    };
    assert_eq!(status, 403, "{}", body.message);
    assert!(
        body.message.contains("the version goes to every host"),
        "{}",
        body.message
    );
    assert!(admin.list_packages().await.unwrap().is_empty());
    // Within its hosts: by label, or by its own entry as written.
    for target in [
        UploadTarget {
            labels: vec!["role=db".into()],
            ..Default::default()
        },
        UploadTarget {
            hosts: vec!["label.role=db".into()],
            ..Default::default()
        },
    ] {
        t.upload_package_bytes_targeted("schema.sql", None, &target, b"x\n".to_vec())
            .await
            .unwrap_or_else(|e| panic!("{target:?}: {e}"));
    }
    assert_eq!(admin.package_versions("schema.sql").await.unwrap().len(), 2);
}
