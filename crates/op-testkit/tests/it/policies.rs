//! Token policies (issue 24) with real binaries: a manager and three agents, a team token made
//! with `agentcli token create --job/--host/--verbs` that lists only its jobs and hosts, runs
//! `exec --all` only on its hosts (naming the refused one), cannot save a job reaching outside
//! its hosts or named outside its globs, cannot read tokens or set secrets, and whose console
//! shows only its jobs. Bad policies are a 400 and create nothing.

use std::process::Output;

use op_client::Started;
use op_proto::NodeStatus;
use op_proto::api::{CreatePolicyTokenRequest, Scope};
use op_proto::invoke::{InvocationEvent, InvokeRequest};
use op_proto::policy::TokenPolicy;
use op_testkit::{Agent, AgentOptions, Manager, bin, wait_until};

use op_proto::api::RunQuery;

use crate::support::{LONG, console_get, fleet, runs_of};

async fn agentcli(m: &Manager, token: &str, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(bin("agentcli"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", m.dir.path())
        .env("OP_MANAGER", &m.api_url)
        .env("OP_TOKEN", token)
        .args(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("agentcli runs"))
        .await
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn task(name: &str, white: &[&str]) -> String {
    serde_json::json!({
        "JobName": name,
        "Command": "true",
        "CronExpr": "0 0 3 * * * *",
        "WhiteHosts": white,
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verb_beyond_the_scope_is_refused_and_creates_nothing() {
    let m = Manager::start();
    for (scope, verbs, says) in [
        (
            "viewer",
            "save",
            "verb \"save\" needs an operator token; a viewer token can use only read",
        ),
        (
            "operator",
            "read,tokens",
            "verb \"tokens\" needs an admin token",
        ),
    ] {
        let out = agentcli(
            &m,
            &m.admin_token,
            &[
                "token", "create", "--name", "useless", "--scope", scope, "--verbs", verbs,
            ],
        )
        .await;
        assert!(!out.status.success(), "{}", text(&out));
        assert!(text(&out).contains(says), "{says}: {}", text(&out));
    }
    let c = m.client();
    let err = c
        .create_policy_token(&CreatePolicyTokenRequest {
            name: "useless".into(),
            scope: Scope::Viewer,
            expires_in_secs: None,
            policy: Some(TokenPolicy {
                verbs: vec!["run".into()],
                ..TokenPolicy::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    let tokens = c.list_tokens().await.unwrap();
    assert!(!tokens.iter().any(|t| t.name == "useless"), "{tokens:?}");
    // What the scope can use is still accepted.
    let out = agentcli(
        &m,
        &m.admin_token,
        &[
            "token", "create", "--name", "board", "--scope", "viewer", "--verbs", "read",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_token_sees_and_reaches_only_its_jobs_and_hosts() {
    let m = Manager::start();
    let _agents: Vec<Agent> = (1..=3)
        .map(|i| {
            Agent::start(
                AgentOptions::new(&format!("node-{i}"), &format!("127.0.0.{}", i + 1)).manager(&m),
            )
        })
        .collect();
    let c = m.client();
    wait_until(LONG, "three agents Ready", || async {
        c.list_nodes()
            .await
            .is_ok_and(|n| n.iter().filter(|n| n.status == NodeStatus::Ready).count() == 3)
    })
    .await;
    c.save_job_text("team-a-backup", &task("team-a-backup", &["node-1"]))
        .await
        .unwrap();
    c.save_job_text("team-b-report", &task("team-b-report", &["node-3"]))
        .await
        .unwrap();

    // Bad policies: a clear 400 and nothing created.
    for (args, says) in [
        (vec!["--verbs", "read,fly"], "unknown verb \"fly\""),
        (vec!["--job", "team a"], "job glob"),
        (vec!["--host", "10.0.0.0/99"], "10.0.0.0/99"),
    ] {
        let mut all = vec!["token", "create", "--name", "bad", "--scope", "operator"];
        all.extend(args);
        let out = agentcli(&m, &m.admin_token, &all).await;
        assert!(!out.status.success(), "{}", text(&out));
        assert!(text(&out).contains(says), "{says}: {}", text(&out));
    }
    let err = c
        .create_policy_token(&CreatePolicyTokenRequest {
            name: "bad".into(),
            scope: Scope::Operator,
            expires_in_secs: None,
            policy: Some(TokenPolicy {
                verbs: vec!["sudo".into()],
                ..TokenPolicy::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(
        !c.list_tokens()
            .await
            .unwrap()
            .iter()
            .any(|t| t.name == "bad")
    );

    // The team token, made as the docs type it; `token list` shows its policy.
    let out = agentcli(
        &m,
        &m.admin_token,
        &[
            "token",
            "create",
            "--name",
            "team-a",
            "--scope",
            "operator",
            "--job",
            "team-a-*",
            "--host",
            "node-1",
            "--host",
            "node-2",
            "--verbs",
            "read,save,run,exec",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let team = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = agentcli(&m, &m.admin_token, &["token", "list"]).await;
    let line = text(&out)
        .lines()
        .find(|l| l.contains("team-a"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("jobs=team-a-*") && line.contains("hosts=node-1,node-2"),
        "{}",
        text(&out)
    );
    let t = m.client_with(&team);

    // Listings: its jobs and its hosts only.
    let jobs: Vec<String> = t
        .list_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.record.spec.name)
        .collect();
    assert_eq!(jobs, vec!["team-a-backup".to_string()]);
    let mut nodes: Vec<String> = t
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.hostname)
        .collect();
    nodes.sort();
    assert_eq!(nodes, vec!["node-1".to_string(), "node-2".to_string()]);
    let err = t.get_job("team-b-report").await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");

    // exec --all runs on its hosts only and names the refused one.
    let out = agentcli(&m, &team, &["exec", "--all", "--", "hostname"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("refused by this token's policy (not run there): node-3"),
        "{all}"
    );
    assert!(all.contains("2 host(s): 2 ok"), "{all}");
    let out = agentcli(&m, &team, &["exec", "--all", "-o", "json", "--", "true"]).await;
    let mut ran = Vec::new();
    let mut refused = Vec::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        match serde_json::from_str::<InvocationEvent>(l).unwrap() {
            InvocationEvent::Accepted(a) => refused = a.refused,
            InvocationEvent::Result(r) => ran.push(r.host),
            _ => {}
        }
    }
    ran.sort();
    assert_eq!(ran, vec!["node-1".to_string(), "node-2".to_string()]);
    assert_eq!(refused, vec!["node-3".to_string()]);
    // Naming only a refused host runs nothing.
    let err = t
        .exec(&InvokeRequest {
            command: Some("true".into()),
            hosts: vec!["node-3".into()],
            wait: Some(false),
            ..InvokeRequest::default()
        })
        .await
        .map(|s| matches!(s, Started::Accepted(_)))
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    assert!(err.to_string().contains("node-3"), "{err}");

    // Runs: the team runs its job; the admin runs the other team's. The team's run listing
    // holds its own job's runs only, and it may not run the other job.
    let run = InvokeRequest {
        wait: Some(false),
        ..InvokeRequest::default()
    };
    t.run_job("team-a-backup", &run).await.unwrap();
    c.run_job("team-b-report", &run).await.unwrap();
    assert_eq!(
        t.run_job("team-b-report", &run)
            .await
            .err()
            .and_then(|e| e.status()),
        Some(403)
    );
    wait_until(LONG, "both jobs' runs stored", || async {
        !runs_of(&c, "team-a-backup").await.is_empty()
            && !runs_of(&c, "team-b-report").await.is_empty()
    })
    .await;
    let seen = t
        .runs(&RunQuery {
            limit: Some(1000),
            ..RunQuery::default()
        })
        .await
        .unwrap();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|r| r.job.starts_with("team-a-")),
        "{seen:?}"
    );
    assert!(runs_of(&t, "team-b-report").await.is_empty());

    // Saving: within its hosts and globs, yes; outside either, 403 and nothing saved.
    t.save_job_text("team-a-new", &task("team-a-new", &["node-2"]))
        .await
        .unwrap();
    for (name, white) in [
        ("team-a-wide", vec!["node-1", "node-3"]),
        ("team-a-all", vec![]),
        ("team-b-sneak", vec!["node-1"]),
    ] {
        let err = t
            .save_job_text(name, &task(name, &white))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(403), "{name}: {err}");
    }
    let names: Vec<String> = c
        .list_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.record.spec.name)
        .collect();
    assert_eq!(names, ["team-a-backup", "team-a-new", "team-b-report"]);

    // No tokens, no secrets: not for the team's operator token, nor for an admin token whose
    // policy does not grant them.
    let boss = c
        .create_policy_token(&CreatePolicyTokenRequest {
            name: "team-a-admin".into(),
            scope: Scope::Admin,
            expires_in_secs: None,
            policy: Some(TokenPolicy {
                jobs: vec!["team-a-*".into()],
                verbs: vec!["read".into(), "save".into()],
                ..TokenPolicy::default()
            }),
        })
        .await
        .unwrap()
        .secret;
    for who in [&team, &boss] {
        let w = m.client_with(who);
        assert_eq!(w.list_tokens().await.unwrap_err().status(), Some(403));
        assert_eq!(
            w.set_secret("team-a/pw", "x").await.unwrap_err().status(),
            Some(403)
        );
    }
    assert!(c.list_secrets().await.unwrap().is_empty());

    // The console signed in with the team token: its jobs only.
    let page = console_get(&m, &team, "/ui/jobs").await;
    assert!(page.contains("team-a-backup"), "{page}");
    assert!(!page.contains("team-b-report"), "{page}");
    let page = console_get(&m, &team, "/ui/jobs/team-b-report").await;
    assert!(page.contains("no job named"), "{page}");
    let page = console_get(&m, &m.admin_token, "/ui/jobs").await;
    assert!(page.contains("team-b-report"), "{page}");
    // The other team's run: neither its page nor the live output poll of that page (which
    // once fell back to the stored output when the API refused the token).
    let theirs = runs_of(&c, "team-b-report").await[0].run_id;
    for path in [
        format!("/ui/runs/{theirs}"),
        format!("/ui/runs/{theirs}/live"),
    ] {
        let page = console_get(&m, &team, &path).await;
        assert!(
            page.contains("no such run") && !page.contains("\"text\""),
            "{path}: {page}"
        );
    }
    // A host outside the token's hosts: its console page is as absent as `GET /v1/nodes/KEY`.
    let nodes = c.list_nodes().await.unwrap();
    let id_of = |name: &str| nodes.iter().find(|n| n.hostname == name).unwrap().node_id;
    let page = console_get(&m, &team, &format!("/ui/nodes/{}", id_of("node-3"))).await;
    assert!(
        page.contains("no such node") && !page.contains("team-b-report"),
        "{page}"
    );
    let page = console_get(&m, &team, &format!("/ui/nodes/{}", id_of("node-1"))).await;
    assert!(page.contains("team-a-backup"), "{page}");
    let ours = runs_of(&c, "team-a-backup").await[0].run_id;
    let live = console_get(&m, &team, &format!("/ui/runs/{ours}/live")).await;
    assert!(live.contains("\"text\""), "{live}");
}

/// Pauses, windows, drains and upgrade pins reach other teams' jobs and hosts unless they
/// name the team's own: a team token with the `pause` and `upgrade` verbs pauses and drains
/// only its own jobs and hosts (403 and nothing held otherwise), cannot remove another's
/// maintenance window, and hears of its own hosts only in the upgrade status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_token_holds_only_its_own_jobs_and_hosts() {
    use op_proto::agent_upgrade::PinRequest;
    use op_proto::holds::{HoldScope, PauseRequest, ResumeRequest, WindowRequest};

    let m = Manager::start();
    let _agents = fleet(&m, 2, &[]).await;
    let c = m.client();
    c.save_job_text("team-a-backup", &task("team-a-backup", &["node-1"]))
        .await
        .unwrap();
    c.save_job_text("team-b-report", &task("team-b-report", &["node-2"]))
        .await
        .unwrap();
    let team = c
        .create_policy_token(&CreatePolicyTokenRequest {
            name: "team-a".into(),
            scope: Scope::Operator,
            expires_in_secs: None,
            policy: Some(TokenPolicy {
                jobs: vec!["team-a-*".into()],
                hosts: vec!["node-1".into()],
                verbs: ["read", "pause", "upgrade", "upload", "rollback", "delete"]
                    .map(String::from)
                    .to_vec(),
            }),
        })
        .await
        .unwrap()
        .secret;
    let t = m.client_with(&team);

    let pause = |scope: HoldScope| PauseRequest { scope, until: None };
    let label = HoldScope::Label {
        key: "team".into(),
        value: "b".into(),
    };
    for scope in [
        HoldScope::All,
        label.clone(),
        HoldScope::Job("team-b-report".into()),
    ] {
        let err = t.pause(&pause(scope.clone())).await.unwrap_err();
        assert_eq!(err.status(), Some(403), "{scope:?}: {err}");
    }
    assert!(c.pauses().await.unwrap().is_empty());
    t.pause(&pause(HoldScope::Job("team-a-backup".into())))
        .await
        .unwrap();
    t.resume(&ResumeRequest {
        scope: HoldScope::Job("team-a-backup".into()),
    })
    .await
    .unwrap();

    // Windows: not fleet-wide, and not another's.
    let window = |scope: HoldScope| WindowRequest {
        cron: "0 2 * * *".into(),
        duration: "1h".into(),
        scope,
    };
    let err = t
        .put_window("team-window", &window(HoldScope::All))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    c.put_window("nightly", &window(HoldScope::All))
        .await
        .unwrap();
    let err = t.remove_window("nightly").await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    let err = t
        .put_window("nightly", &window(HoldScope::Job("team-a-backup".into())))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    let windows = c.windows().await.unwrap();
    assert!(
        windows.len() == 1 && windows[0].scope == HoldScope::All,
        "{windows:?}"
    );

    // Drains and pins: its own host only.
    assert_eq!(
        t.drain_node("node-2", true).await.unwrap_err().status(),
        Some(403)
    );
    t.drain_node("node-1", true).await.unwrap();
    t.drain_node("node-1", false).await.unwrap();
    let pin = |node: Option<&str>, label: Option<&str>| PinRequest {
        node: node.map(str::to_string),
        label: label.map(str::to_string),
        version: Some("0.1.0".into()),
    };
    for req in [pin(Some("node-2"), None), pin(None, Some("team=b"))] {
        let err = t.agent_pin(&req).await.unwrap_err();
        assert_eq!(err.status(), Some(403), "{req:?}: {err}");
    }
    assert!(c.agent_upgrade_status().await.unwrap().pins.is_empty());
    let hosts: Vec<String> = t
        .agent_upgrade_status()
        .await
        .unwrap()
        .hosts
        .into_iter()
        .map(|h| h.hostname)
        .collect();
    assert_eq!(hosts, ["node-1"]);
    let nodes = c.list_nodes().await.unwrap();
    assert!(nodes.iter().all(|n| n.drain.is_none()), "{nodes:?}");

    // Packages: another team's (which goes everywhere) is not its to roll back or prune; a
    // new agent release goes to every agent. Its own, targeted at its host, it may.
    for content in ["v1\n", "v2\n"] {
        c.upload_package_bytes("tool.sh", None, content.as_bytes().to_vec())
            .await
            .unwrap();
    }
    let theirs = c.package_versions("tool.sh").await.unwrap();
    let err = t.rollback_package("tool.sh", None).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    let err = t
        .delete_package_version("tool.sh", theirs[0].version)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    assert_eq!(c.package_versions("tool.sh").await.unwrap(), theirs);
    let release =
        futures_util::stream::once(async { Ok::<_, std::io::Error>(b"\x7fELF".to_vec()) });
    let err = t
        .upload_agent_release(
            "op-agent-linux-x86_64",
            &[("version", "9.9.9".to_string())],
            Some(4),
            release,
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    let own = op_client::UploadTarget {
        hosts: vec!["node-1".into()],
        ..Default::default()
    };
    for content in ["a1\n", "a2\n"] {
        t.upload_package_bytes_targeted("team-a.sh", None, &own, content.as_bytes().to_vec())
            .await
            .unwrap();
    }
    t.rollback_package("team-a.sh", None).await.unwrap();

    // The other team's pauses, windows and rollouts are not listed to it, nor found by id.
    c.pause(&pause(HoldScope::Job("team-b-report".into())))
        .await
        .unwrap();
    c.put_window(
        "team-b-nightly",
        &window(HoldScope::Job("team-b-report".into())),
    )
    .await
    .unwrap();
    c.save_job_text(
        "team-b-staged",
        r#"{"JobName":"team-b-staged","Command":"true","WhiteHosts":["node-2"],
            "Rollout":{"Stages":["1"]}}"#,
    )
    .await
    .unwrap();
    let staged = c
        .rollouts()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.subject == "team-b-staged")
        .expect("the save is staged");
    assert_eq!(c.pauses().await.unwrap().len(), 1);
    assert!(t.pauses().await.unwrap().is_empty());
    let windows: Vec<String> = t
        .windows()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.name)
        .collect();
    assert_eq!(windows, ["nightly"]);
    let rollouts = t.rollouts().await.unwrap();
    assert!(
        rollouts.iter().all(|r| r.subject != "team-b-staged"),
        "{rollouts:?}"
    );
    let err = t.rollout(&staged.id.to_string()).await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    let page = console_get(&m, &team, "/ui/rollouts").await;
    assert!(!page.contains("team-b-staged"), "{page}");
    let page = console_get(&m, &team, &format!("/ui/rollouts/{}", staged.id)).await;
    assert!(page.contains("no rollout"), "{page}");

    // A team's token manager (admin scope, `tokens` verb) lists, makes and revokes only tokens
    // within its policy: never the admin's, nor the team token with more verbs.
    let within = |verbs: &[&str]| TokenPolicy {
        jobs: vec!["team-a-*".into()],
        hosts: vec![],
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
    };
    let keeper = c
        .create_policy_token(&CreatePolicyTokenRequest {
            name: "team-a-keeper".into(),
            scope: Scope::Admin,
            expires_in_secs: None,
            policy: Some(within(&["read", "tokens"])),
        })
        .await
        .unwrap()
        .secret;
    let k = m.client_with(&keeper);
    let made = k
        .create_policy_token(&CreatePolicyTokenRequest {
            name: "team-a-dash".into(),
            scope: Scope::Viewer,
            expires_in_secs: None,
            policy: Some(within(&["read"])),
        })
        .await
        .unwrap();
    let listed: Vec<String> = k
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(listed, ["team-a-keeper", "team-a-dash"]);
    let admin_id = m.admin_token.split('.').next().unwrap().to_string();
    let team_id = team.split('.').next().unwrap().to_string();
    for id in [&admin_id, &team_id] {
        let err = k.revoke_token(id).await.unwrap_err();
        assert_eq!(err.status(), Some(403), "{id}: {err}");
    }
    k.revoke_token(&made.info.id).await.unwrap();
    assert!(c.list_jobs().await.is_ok(), "the admin token still works");
    assert!(t.pauses().await.is_ok(), "the team token still works");
}

/// Makes a policy token through the API and returns its secret.
async fn team_token(c: &op_client::Client, name: &str, jobs: &[&str], hosts: &[&str]) -> String {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    c.create_policy_token(&CreatePolicyTokenRequest {
        name: name.into(),
        scope: Scope::Operator,
        expires_in_secs: None,
        policy: Some(TokenPolicy {
            jobs: strings(jobs),
            hosts: strings(hosts),
            ..TokenPolicy::default()
        }),
    })
    .await
    .unwrap()
    .secret
}

/// Two teams share a host: a team token's node listing, node lookup and console node pages
/// count and name only its own jobs' running runs, never the other team's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_token_sees_only_its_own_runs_on_a_shared_host() {
    let m = Manager::start();
    let _agent = Agent::start(AgentOptions::new("node-1", "127.0.0.2").manager(&m));
    let c = m.client();
    wait_until(LONG, "the agent Ready", || async {
        c.list_nodes()
            .await
            .is_ok_and(|n| n.iter().any(|n| n.status == NodeStatus::Ready))
    })
    .await;
    let sleeper = |name: &str| {
        serde_json::json!({
            "JobName": name,
            "Command": "sleep 60",
            "CronExpr": "0 0 3 * * * *",
            "WhiteHosts": ["node-1"],
        })
        .to_string()
    };
    c.save_job_text("team-b-long", &sleeper("team-b-long"))
        .await
        .unwrap();
    let run = InvokeRequest {
        wait: Some(false),
        ..InvokeRequest::default()
    };
    c.run_job("team-b-long", &run).await.unwrap();
    wait_until(LONG, "team-b-long running on node-1", || async {
        c.get_node("node-1")
            .await
            .is_ok_and(|n| n.running.iter().any(|r| r.job == "team-b-long"))
    })
    .await;

    let team = team_token(&c, "team-a", &["team-a-*"], &["node-1"]).await;
    let t = m.client_with(&team);
    let nodes = t.list_nodes().await.unwrap();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert!(nodes[0].running.is_empty(), "{:?}", nodes[0].running);
    let node = t.get_node("node-1").await.unwrap();
    assert!(node.running.is_empty(), "{:?}", node.running);
    let page = console_get(&m, &team, "/ui/nodes").await;
    assert!(page.contains("<td data-label=\"Running\">0</td>"), "{page}");
    let page = console_get(&m, &team, &format!("/ui/nodes/{}", node.node_id)).await;
    assert!(!page.contains("team-b-long"), "{page}");
    assert!(page.contains("Nothing is running."), "{page}");
    // The admin still sees it.
    let page = console_get(&m, &m.admin_token, "/ui/nodes").await;
    assert!(page.contains("<td data-label=\"Running\">1</td>"), "{page}");
}

/// The audit log names every team's changes: a team token limited only by hosts (so every
/// job is its) reads, in the API and the console, the entries about its hosts and the tokens
/// within its policy, and none about another team's host or token, secrets or execs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_token_reads_only_its_own_audit_entries() {
    let m = Manager::start();
    let _agents = fleet(&m, 2, &[]).await;
    let c = m.client();
    for host in ["node-1", "node-2"] {
        let req = op_proto::api::LabelRequest {
            set: [("rack".to_string(), format!("rack-of-{host}"))].into(),
            remove: vec![],
        };
        c.label_node(host, &req).await.unwrap();
    }
    team_token(&c, "team-a-ci", &[], &["node-1"]).await;
    team_token(&c, "team-b-ci", &[], &["node-2"]).await;
    c.set_secret("team-b/pw", "x").await.unwrap();
    c.exec(&InvokeRequest {
        command: Some("echo secret-plan".into()),
        hosts: vec!["node-2".into()],
        wait: Some(false),
        ..InvokeRequest::default()
    })
    .await
    .unwrap();
    let team = team_token(&c, "team-a", &[], &["node-1"]).await;

    let all = c.audit(None, None).await.unwrap();
    for action in ["secret.add", "exec"] {
        assert!(all.iter().any(|e| e.action == action), "{all:?}");
    }
    let seen: Vec<(String, String)> = m
        .client_with(&team)
        .audit(None, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.action, e.target))
        .collect();
    let has = |action: &str, target: &str| seen.iter().any(|(a, t)| a == action && t == target);
    assert!(has("node.label", "node-1"), "{seen:?}");
    assert!(has("token.create", "team-a-ci"), "{seen:?}");
    assert!(!has("node.label", "node-2"), "{seen:?}");
    assert!(!has("node.register", "node-2"), "{seen:?}");
    assert!(!has("token.create", "team-b-ci"), "{seen:?}");
    assert!(
        !seen
            .iter()
            .any(|(a, _)| a.starts_with("secret.") || a == "exec"),
        "{seen:?}"
    );

    let page = console_get(&m, &team, "/ui/audit").await;
    assert!(page.contains("rack-of-node-1"), "{page}");
    for hidden in ["rack-of-node-2", "team-b-ci", "team-b/pw", "secret-plan"] {
        assert!(!page.contains(hidden), "{hidden}: {page}");
    }
    let page = console_get(&m, &m.admin_token, "/ui/audit").await;
    assert!(page.contains("rack-of-node-2"), "{page}");
}
