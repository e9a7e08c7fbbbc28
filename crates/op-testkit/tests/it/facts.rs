//! Facts and the one selector grammar (issue 23 item 5): a real agent reports its machine's facts
//! (shown in `get nodes NAME -o json`, `get node NAME`), `fact.` and `label.` selectors in
//! `WhiteHosts` and `exec --host` select by them, a manager label changes selection without the
//! agent restarting, and a selector that does not parse is a 400 with nothing saved.

use op_testkit::{Manager, wait_until};

use crate::support::{LONG, agentcli, fleet, job, local_runs, text};

/// `ID` of this machine's /etc/os-release, as the agent on it reports it.
fn os_id() -> String {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    op_agent::facts::parse_os_release(&release)
        .get("ID")
        .cloned()
        .unwrap_or_default()
}

fn cpu_count() -> u64 {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count() as u64
}

#[tokio::test]
async fn facts_of_a_real_agent_and_labels_from_the_manager_select_hosts() {
    let m = Manager::start();
    let agents = fleet(&m, 2, &[]).await;
    let c = m.client();
    let os = os_id();
    assert!(!os.is_empty(), "this machine has an /etc/os-release ID");
    wait_until(LONG, "both agents reported facts", || async {
        let nodes = c.list_nodes().await.unwrap_or_default();
        nodes.len() == 2 && nodes.iter().all(|n| n.facts.is_some())
    })
    .await;

    // `get nodes NAME -o json` has the facts of this machine.
    let out = agentcli(&m, &["get", "nodes", "node-1", "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let node = if v.is_array() { &v[0] } else { &v };
    let facts = &node["facts"];
    assert_eq!(facts["os"], os.as_str(), "{facts}");
    assert_eq!(facts["cpus"].as_u64(), Some(cpu_count()), "{facts}");
    assert_eq!(
        facts["kernel"].as_str().unwrap(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap()
            .trim()
    );
    assert!(facts["memory_mb"].as_u64().unwrap() > 0, "{facts}");
    assert!(!facts["virt"].as_str().unwrap().is_empty(), "{facts}");
    assert_eq!(facts["agent_version"], env!("CARGO_PKG_VERSION"));
    // The short view: `get node NAME` and `get nodes -o wide`.
    let out = agentcli(&m, &["get", "node", "node-1"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.lines().next().unwrap().contains("FACTS"), "{shown}");
    let cpus = format!("{} cpu", cpu_count());
    assert!(shown.contains(&os) && shown.contains(&cpus), "{shown}");
    let wide = text(&agentcli(&m, &["get", "nodes", "-o", "wide"]).await.stdout);
    let row = wide.lines().find(|l| l.starts_with("node-2")).unwrap();
    assert!(row.contains(&os), "{row}");

    // Bad selectors: a 400 naming the entry, nothing saved; agentcli refuses before sending.
    for bad in [
        "label.=x",
        "fact.cpus>=abc",
        "fact.",
        "fact.colour=red",
        "fact.cpus=>1",
        "label.tier=!db",
    ] {
        let task = serde_json::json!({
            "JobName": "bad-sel", "Command": "true", "CronExpr": "*/1 * * * * * *",
            "WhiteHosts": [bad],
        });
        let e = c
            .save_job_text("bad-sel", &task.to_string())
            .await
            .expect_err(bad);
        assert_eq!(e.status(), Some(400), "{bad}: {e}");
        assert!(e.to_string().contains(bad), "{bad}: {e}");
        let raw = reqwest::Client::new()
            .post(format!("{}/v1/exec", m.api_url))
            .bearer_auth(&m.admin_token)
            .json(&serde_json::json!({"command": "true", "white": [bad]}))
            .send()
            .await
            .unwrap();
        assert_eq!(raw.status().as_u16(), 400, "exec with {bad}");
        let out = agentcli(&m, &["exec", "--host", bad, "--", "true"]).await;
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out.stderr));
    }
    assert!(c.get_job("bad-sel").await.is_err(), "nothing was saved");

    // A selector no host meets selects nothing: a cron job saved first never runs anywhere, and
    // an exec is refused.
    c.save_job(&job(
        r#"{"JobName":"huge","Command":"echo huge","CronExpr":"*/1 * * * * * *","WhiteHosts":["fact.cpus>=100000"]}"#,
    ))
    .await
    .unwrap();
    let out = agentcli(&m, &["exec", "--host", "fact.cpus>=100000", "--", "true"]).await;
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("no host matches"),
        "{}",
        text(&out.stderr)
    );
    // The job selecting by this machine's OS runs (node-2 is excluded by name).
    c.save_job(&job(&format!(
        r#"{{"JobName":"by-os","Command":"echo os","CronExpr":"*/1 * * * * * *","WhiteHosts":["fact.os={os}","fact.memory_mb>=1"],"BlackHosts":["node-2"]}}"#
    )))
    .await
    .unwrap();
    wait_until(LONG, "by-os runs on node-1", || async {
        local_runs(&agents[0], "by-os").await.len() >= 2
    })
    .await;

    // A manager label: the job waiting for role=db starts on node-2 without an agent restart.
    c.save_job(&job(
        r#"{"JobName":"db-only","Command":"echo db","CronExpr":"*/1 * * * * * *","WhiteHosts":["label.role=db"]}"#,
    ))
    .await
    .unwrap();
    let out = agentcli(&m, &["label", "node-2", "role=db"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    wait_until(LONG, "db-only runs on node-2", || async {
        local_runs(&agents[1], "db-only").await.len() >= 2
    })
    .await;
    assert_eq!(
        agents[1].log().matches("agent running").count(),
        1,
        "the agent was not restarted"
    );

    // exec --host label.role=db targets node-2 alone.
    let out = agentcli(&m, &["exec", "--host", "label.role=db", "--", "echo hi"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with("node-2 (")),
        "{stdout}"
    );
    assert!(
        !stdout.lines().any(|l| l.starts_with("node-1 (")),
        "{stdout}"
    );
    assert!(stdout.contains("1 host(s): 1 ok"), "{stdout}");
    // --exclude takes the same grammar.
    let out = agentcli(
        &m,
        &[
            "exec",
            "--all",
            "--exclude",
            "label.role=db",
            "--",
            "echo hi",
        ],
    )
    .await;
    let stdout = text(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with("node-1 (")) && stdout.contains("1 host(s): 1 ok"),
        "{stdout}"
    );

    // Everything above had time to run `huge` and the excluded/unlabelled jobs: none ran.
    assert!(local_runs(&agents[0], "huge").await.is_empty());
    assert!(local_runs(&agents[1], "huge").await.is_empty());
    assert!(local_runs(&agents[1], "by-os").await.is_empty());
    assert!(local_runs(&agents[0], "db-only").await.is_empty());

    // The console's node page lists the facts.
    let node = c.get_node("node-1").await.unwrap();
    let b = crate::browser::Browser::start(1280, 900).await;
    b.goto(&format!("{}/ui", m.api_url)).await;
    b.fill("#token", &m.admin_token).await;
    b.click("#login").await;
    b.find("#overview").await;
    b.goto(&format!("{}/ui/nodes/{}", m.api_url, node.node_id))
        .await;
    b.ready().await;
    let card = b.text("#node-facts").await;
    assert!(card.contains("cpus") && card.contains(&os), "{card}");
    assert!(card.contains(&cpu_count().to_string()), "{card}");
}
