//! Secrets (issue 24) with real binaries: a job uses a secret through `"Env": {"DB_PW":
//! "secret:db/pw"}`, runs with the real value (its side effect proves it), while every place the
//! output can be read shows `***`; the value is never at rest in clear (manager data dir, backup
//! archive, agent state dir, daemon logs), never in an API answer, and never sent to a node the
//! job does not select. An agent restarted with no manager fails secret-bearing runs only.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use op_proto::RunStatus;
use op_proto::agent::Heartbeat;
use op_testkit::{Agent, AgentOptions, Manager, wait_until};
use sha2::{Digest, Sha256};

use crate::support::{LONG, job, local_runs, runs_of};

/// Every file under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

fn agentcli(m: &Manager, token: &str, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut child = std::process::Command::new(op_testkit::bin("agentcli"))
        .args(args)
        .env("OP_MANAGER", &m.api_url)
        .env("OP_TOKEN", token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("agentcli starts");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().expect("agentcli ends")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The sync answer a node gets, asked with the node's own credential (as its agent does).
async fn sync_answer(m: &Manager, agent: &Agent, node_id: uuid::Uuid) -> serde_json::Value {
    let token = std::fs::read_to_string(agent.path("state").join("node.token")).unwrap();
    let c = m.client_with(token.trim());
    let hb = Heartbeat {
        node_id,
        agent_version: "0.1.0-test".into(),
        load: None,
        running: vec![],
        packages: vec![],
        stats: Default::default(),
        degraded: None,
        sent_at: None,
        received: Vec::new(),
        facts: None,
        peer_url: None,
    };
    c.sync_as(0, 0, &hb).await.expect("sync answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_only_its_job_and_is_masked_everywhere() {
    let m = Manager::start();
    let chosen = Agent::start(AgentOptions::new("sec-1", "127.0.0.2").manager(&m));
    let other = Agent::start(AgentOptions::new("sec-2", "127.0.0.3").manager(&m));
    let c = m.client();
    wait_until(LONG, "both agents Ready", || async {
        c.list_nodes().await.is_ok_and(|n| {
            n.iter()
                .filter(|n| n.status == op_proto::NodeStatus::Ready)
                .count()
                == 2
        })
    })
    .await;
    let value = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let side = tempfile::tempdir().unwrap();
    let side_file = side.path().join("hash");

    // A job naming a secret that does not exist is refused, and nothing is saved.
    let task = format!(
        r#"{{"JobName":"uses-secret","Command":"printf %s \"$DB_PW\" | sha256sum | cut -d' ' -f1 > {}; echo \"pw is $DB_PW\"; echo \"failed with $DB_PW\" >&2; exit 3",
            "CronExpr":"*/2 * * * * * *","WhiteHosts":["sec-1"],
            "Env":{{"DB_PW":"secret:db/pw","PLAIN":"visible-to-operators"}}}}"#,
        side_file.display()
    );
    let err = c.save_job(&job(&task)).await.unwrap_err().to_string();
    assert!(
        err.contains("db/pw") && err.contains("agentcli secret set"),
        "{err}"
    );
    assert!(c.list_jobs().await.unwrap().is_empty());

    // Set through the CLI: the value comes on stdin; an empty one is refused.
    let out = agentcli(&m, &m.admin_token, &["secret", "set", "db/pw"], b"\n");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("empty"), "{}", text(&out));
    let out = agentcli(
        &m,
        &m.admin_token,
        &["secret", "set", "db/pw"],
        format!("{value}\n").as_bytes(),
    );
    assert!(out.status.success(), "{}", text(&out));
    // An operator lists names but cannot set; a viewer cannot even list.
    let operator = c
        .create_token(&op_proto::api::CreateTokenRequest {
            name: "ops".into(),
            scope: op_proto::api::Scope::Operator,
            expires_in_secs: None,
        })
        .await
        .unwrap()
        .secret;
    let viewer = c
        .create_token(&op_proto::api::CreateTokenRequest {
            name: "look".into(),
            scope: op_proto::api::Scope::Viewer,
            expires_in_secs: None,
        })
        .await
        .unwrap()
        .secret;
    let out = agentcli(&m, &operator, &["secret", "list", "-o", "json"], b"");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("db/pw") && !text(&out).contains(&value));
    let out = agentcli(&m, &operator, &["secret", "set", "db/pw"], b"other");
    assert!(!out.status.success(), "{}", text(&out));
    let out = agentcli(&m, &viewer, &["secret", "list"], b"");
    assert!(!out.status.success(), "{}", text(&out));
    // It says what was refused: listing, not "changing jobs, runs, nodes or packages".
    assert!(
        text(&out).contains("may not list secret names") && !text(&out).contains("change jobs"),
        "{}",
        text(&out)
    );

    c.save_job(&job(&task)).await.unwrap();
    wait_until(LONG, "two runs of the secret job stored", || async {
        runs_of(&c, "uses-secret").await.len() >= 2
    })
    .await;

    // The run had the real value: its side effect is the value's hash.
    let want = hex::encode(Sha256::digest(value.as_bytes()));
    assert_eq!(std::fs::read_to_string(&side_file).unwrap().trim(), want);

    // Every place the output can be read shows *** instead.
    let runs = runs_of(&c, "uses-secret").await;
    for r in &runs {
        assert_eq!(r.status, RunStatus::Failed, "{r:?}");
        assert!(r.output.contains("pw is ***"), "{:?}", r.output);
        assert!(
            r.stderr_tail.contains("failed with ***"),
            "{:?}",
            r.stderr_tail
        );
    }
    let run = &runs[0];
    let piece = c.run_output(run.run_id, 0, 10).await.unwrap();
    let full = String::from_utf8_lossy(&piece.data).into_owned();
    assert!(
        full.contains("pw is ***") && !full.contains(&value),
        "{full}"
    );
    let out = agentcli(&m, &m.admin_token, &["logs", "uses-secret", "--full"], b"");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("***") && !text(&out).contains(&value));
    let page =
        crate::support::console_get(&m, &m.admin_token, &format!("/ui/runs/{}", run.run_id)).await;
    assert!(page.contains("pw is ***"), "{page}");
    wait_until(LONG, "the failure is an event", || async {
        let body = reqwest::Client::new()
            .get(format!("{}/v1/events", m.api_url))
            .bearer_auth(&m.admin_token)
            .header(
                op_proto::API_VERSION_HEADER,
                op_proto::API_VERSION.to_string(),
            )
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!body.contains(&value), "{body}");
        body.contains("failed with ***")
    })
    .await;

    // Viewers see Env names, never values, in the API and the console.
    let as_viewer = m.client_with(&viewer).list_jobs().await.unwrap();
    let env = &as_viewer[0].record.spec.env;
    assert_eq!(env["PLAIN"], "***");
    let as_operator = m.client_with(&operator).list_jobs().await.unwrap();
    assert_eq!(
        as_operator[0].record.spec.env["PLAIN"],
        "visible-to-operators"
    );
    // The job's page and its editor, which shows the whole task file.
    for path in ["/ui/jobs/uses-secret", "/ui/jobs/uses-secret/edit"] {
        let page = crate::support::console_get(&m, &viewer, path).await;
        assert!(
            page.contains("PLAIN") && !page.contains("visible-to-operators"),
            "{path}: {page}"
        );
    }

    // Only the selected node receives the value, over its own credential.
    let nodes = c.list_nodes().await.unwrap();
    let id_of = |name: &str| nodes.iter().find(|n| n.hostname == name).unwrap().node_id;
    let mine = sync_answer(&m, &chosen, id_of("sec-1")).await;
    assert_eq!(mine["secrets"]["db/pw"], value.as_str(), "{mine}");
    let theirs = sync_answer(&m, &other, id_of("sec-2")).await;
    assert!(!theirs.to_string().contains(&value), "{theirs}");
    assert!(theirs.get("secrets").is_none(), "{theirs}");

    // No API answer carries the value.
    for body in [
        serde_json::to_string(&c.list_jobs().await.unwrap()).unwrap(),
        serde_json::to_string(&runs_of(&c, "uses-secret").await).unwrap(),
        serde_json::to_string(&c.list_secrets().await.unwrap()).unwrap(),
        serde_json::to_string(&c.audit(None, Some(1000)).await.unwrap()).unwrap(),
    ] {
        assert!(!body.contains(&value), "{body}");
    }

    // Never at rest in clear: the manager's data dir (state, raft log, snapshots), a backup,
    // the agents' state dirs (cached job set, outbox, run logs), either daemon's log.
    let archive = side.path().join("backup.tar.gz");
    let out = std::process::Command::new(op_testkit::bin("op-manager"))
        .args(["backup", "--data-dir"])
        .arg(m.data_dir())
        .arg("--to")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let mut unpacked = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&archive).unwrap()),
        &mut unpacked,
    )
    .unwrap();
    assert!(!unpacked.windows(value.len()).any(|w| w == value.as_bytes()));
    // The backup holds secrets (sealed) but not the key.
    assert!(!unpacked.windows(10).any(|w| w == b"secrets.key"));
    let needle = value.as_bytes();
    assert_eq!(
        files_containing(&m.data_dir(), needle),
        Vec::<String>::new()
    );
    assert_eq!(
        files_containing(chosen.dir.path(), needle),
        Vec::<String>::new()
    );
    assert_eq!(
        files_containing(other.dir.path(), needle),
        Vec::<String>::new()
    );
    assert!(!m.log().contains(&value));
    assert!(!chosen.log().contains(&value));
    let desired = std::fs::read_to_string(chosen.path("state").join("desired.json")).unwrap();
    assert!(desired.contains("secret:db/pw"), "{desired}");

    // A secret in use cannot be removed; once the job is gone it can.
    let out = agentcli(&m, &m.admin_token, &["secret", "rm", "db/pw"], b"");
    assert!(
        !out.status.success() && text(&out).contains("uses-secret"),
        "{}",
        text(&out)
    );
    c.delete_job("uses-secret").await.unwrap();
    let out = agentcli(&m, &m.admin_token, &["secret", "rm", "db/pw"], b"");
    assert!(out.status.success(), "{}", text(&out));
    assert!(c.list_secrets().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_without_a_manager_fails_only_its_secret_runs() {
    let mut m = Manager::start();
    let mut agent = Agent::start(AgentOptions::new("sec-r", "127.0.0.2").manager(&m));
    let c = m.client();
    wait_until(LONG, "the agent is Ready", || async {
        c.list_nodes()
            .await
            .is_ok_and(|n| n.iter().any(|n| n.status == op_proto::NodeStatus::Ready))
    })
    .await;
    c.set_secret("db/pw", "s3cr3t-value-42").await.unwrap();
    for task in [
        r#"{"JobName":"with-secret","Command":"test -n \"$DB_PW\"","CronExpr":"*/1 * * * * * *","Env":{"DB_PW":"secret:db/pw"}}"#,
        r#"{"JobName":"plain","Command":"true","CronExpr":"*/1 * * * * * *"}"#,
    ] {
        c.save_job(&job(task)).await.unwrap();
    }
    wait_until(LONG, "both jobs ran ok", || async {
        let ok = |runs: Vec<op_proto::RunRecord>| runs.iter().any(|r| r.status == RunStatus::Ok);
        ok(local_runs(&agent, "with-secret").await) && ok(local_runs(&agent, "plain").await)
    })
    .await;

    m.stop();
    agent.stop();
    agent.restart();
    let restarted = chrono::Utc::now();
    wait_until(LONG, "runs after the restart", || async {
        // Finished runs started after the restart (a run in flight has a `running` record).
        let after = |runs: Vec<op_proto::RunRecord>| {
            runs.into_iter()
                .filter(|r| r.status != RunStatus::Running)
                .filter(|r| r.started_at.is_some_and(|s| s > restarted))
                .collect::<Vec<_>>()
        };
        let secret_runs = after(local_runs(&agent, "with-secret").await);
        let plain_runs = after(local_runs(&agent, "plain").await);
        for r in &secret_runs {
            assert_eq!(r.status, RunStatus::Failed, "{r:?}");
            let error = r.error.as_deref().unwrap_or("");
            assert!(error.contains("secret unavailable"), "{error}");
        }
        secret_runs.len() >= 2
            && plain_runs
                .iter()
                .filter(|r| r.status == RunStatus::Ok)
                .count()
                >= 2
    })
    .await;
    assert!(files_containing(agent.dir.path(), b"s3cr3t-value-42").is_empty());
}

/// The first line of a member's `secrets.key` (its current key).
fn current_key(m: &Manager) -> String {
    std::fs::read_to_string(m.data_dir().join("secrets.key"))
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// One of three members loses `secrets.key`: it says so at start and serves no secret (its sync
/// answers leave the value out, `secret set` there says why), the others keep serving them. A
/// key rotation then hands every member the new key and re-seals the secrets, after which the
/// member serves them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_the_key_refuses_to_serve_secrets_until_a_rotation() {
    let mut c = op_testkit::Cluster::start(3, op_testkit::FAST_RAFT).await;
    // Joining members received the key with the cluster identity.
    let key = current_key(&c.members[0]);
    assert_eq!(key.len(), 64);
    for m in &c.members {
        assert_eq!(current_key(m), key);
    }
    let agent = Agent::start(AgentOptions::new("sec-c", "127.0.0.2").cluster(&c));
    let client = c.client(0);
    wait_until(LONG, "the agent is Ready", || async {
        client
            .list_nodes()
            .await
            .is_ok_and(|n| n.iter().any(|n| n.status == op_proto::NodeStatus::Ready))
    })
    .await;
    let node = client.list_nodes().await.unwrap()[0].node_id;
    client.set_secret("db/pw", "cluster-pw-7781").await.unwrap();
    client
        .save_job(&job(
            r#"{"JobName":"c-secret","Command":"true","CronExpr":"*/1 * * * * * *","Env":{"DB_PW":"secret:db/pw"}}"#,
        ))
        .await
        .unwrap();
    c.wait_caught_up(LONG).await;

    c.members[2].stop();
    std::fs::remove_file(c.members[2].data_dir().join("secrets.key")).unwrap();
    c.restart(2);
    c.wait_caught_up(LONG).await;
    let log = c.members[2].log();
    assert!(
        log.contains("holds secrets but it has no secrets key"),
        "{log}"
    );
    assert!(!c.members[2].data_dir().join("secrets.key").exists());
    // Member 2 leaves the value out; the others serve it.
    let lost = sync_answer(&c.members[2], &agent, node).await;
    assert!(lost.get("secrets").is_none(), "{lost}");
    assert!(!lost.to_string().contains("cluster-pw-7781"));
    for i in [0, 1] {
        let answer = sync_answer(&c.members[i], &agent, node).await;
        assert_eq!(answer["secrets"]["db/pw"], "cluster-pw-7781", "{answer}");
    }
    let err = c
        .client(2)
        .set_secret("db/other", "v")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("secrets.key"), "{err}");
    // The others keep working: a new secret through member 1 reaches member 0's answers.
    c.client(1)
        .set_secret("db/pw", "cluster-pw-8892")
        .await
        .unwrap();
    let answer = sync_answer(&c.members[0], &agent, node).await;
    assert_eq!(answer["secrets"]["db/pw"], "cluster-pw-8892", "{answer}");

    // Rotation: a new key on every member, the secret re-sealed under it.
    let out = std::process::Command::new(op_testkit::bin("op-manager"))
        .args(["secrets", "rotate-key", "--manager"])
        .arg(&c.members[0].api_url)
        .arg("--token")
        .arg(&c.admin_token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("1 secret(s) on 3 member(s)"),
        "{}",
        text(&out)
    );
    let rotated = current_key(&c.members[0]);
    assert_ne!(rotated, key);
    for m in &c.members {
        assert_eq!(current_key(m), rotated);
    }
    c.wait_caught_up(LONG).await;
    for i in 0..3 {
        let answer = sync_answer(&c.members[i], &agent, node).await;
        assert_eq!(
            answer["secrets"]["db/pw"], "cluster-pw-8892",
            "member {i}: {answer}"
        );
    }
    for m in &c.members {
        assert!(files_containing(&m.data_dir(), b"cluster-pw-8892").is_empty());
    }
}
