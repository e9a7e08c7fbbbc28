//! The HTTP API: the seed's curl call, parameter safety, authentication and error shapes.

#![allow(clippy::disallowed_methods)] // runs curl, as the seed's README does

use std::time::Duration;

use op_proto::RunStatus;
use serde_json::{Value, json};

use crate::support::{Agent, PASS, TOKEN, USER, wait_until};

#[tokio::test]
async fn parameter_values_arrive_literally_in_every_quoting_context() {
    let agent = Agent::start();
    let out = agent.path("out");
    std::fs::create_dir_all(&out).unwrap();
    agent.write_job(
        "echo-param",
        &json!({
            "JobName": "echo-param",
            "Command": "printf '%s' {x} > \"$OUT/u\"; printf '%s' '{x}' > \"$OUT/s\"; printf '%s' \"{x}\" > \"$OUT/d\"; set -- {x}; printf '%s' \"$#\" > \"$OUT/n\"",
            "Env": {"OUT": out.display().to_string()},
            "SynFlag": 1,
        }),
    );
    agent.wait_job("echo-param", None).await;
    let target = agent.path("pwned");
    let t = target.display().to_string();
    let values = [
        format!("'; touch {t}; '"),
        format!("$(touch {t})"),
        format!("`touch {t}`"),
        format!("a\ntouch {t}\nb"),
        "\"".to_string(),
        format!("\"; touch {t}; \""),
        "a b".to_string(),
        "${HOME} $$ * ~ {x} \\".to_string(),
    ];
    for value in values {
        let run = agent.invoke_sync("echo-param", &json!({"x": value})).await;
        assert_eq!(run.status, RunStatus::Ok, "{value:?}: {run:?}");
        for ctx in ["u", "s", "d"] {
            let got = std::fs::read_to_string(out.join(ctx)).unwrap();
            assert_eq!(got, value, "context {ctx}");
        }
        assert_eq!(
            std::fs::read_to_string(out.join("n")).unwrap(),
            "1",
            "{value:?} is one word"
        );
        assert!(!target.exists(), "{value:?} executed code");
        assert_eq!(run.params.get("x"), Some(&value));
    }
}

fn curl(agent: &Agent, extra: &str) -> Value {
    // The seed README's line, with our port.
    let line = format!(
        "curl -s --connect-timeout 2 -u {USER}:{PASS} http://127.0.0.1:{}/api/opAgent{extra} -d '{{\"jobname\":\"apiTest.py\", \"host\":\"192.168.1.1\", \"port\":\"3306\"}}'",
        agent.addr.port()
    );
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&line)
        .output()
        .unwrap();
    assert!(out.status.success(), "{line}: {out:?}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test]
async fn the_seeds_curl_example_works_async_and_sync() {
    let agent = Agent::start();
    let src = agent.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("apiTest.py"),
        "import argparse\np = argparse.ArgumentParser()\np.add_argument('--host')\np.add_argument('--port')\na = p.parse_args()\nprint('host=%s port=%s' % (a.host, a.port))\n",
    )
    .unwrap();
    // The seed's apiTest.json, with `python3` and our source dir.
    let mut job = json!({
        "JobName": "apiTest.py",
        "Command": format!("python3 {}/apiTest.py --host '{{host}}' --port '{{port}}'", src.display()),
        "CronExpr": "",
        "OnceJob": 0,
        "Timeout": 0,
        "SynFlag": 0,
        "Enabled": 1,
        "WhiteHosts": [],
        "BlackHosts": [],
    });
    agent.write_job("apiTest", &job);
    agent.wait_job("apiTest.py", Some(1)).await;

    // SynFlag 0: the run id at once.
    let env = curl(&agent, "");
    assert_eq!(env["Code"], "OK", "{env}");
    let id = env["Details"]["run_id"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(20), "async run finished", || async {
        agent.run(&id).await.status == RunStatus::Ok
    })
    .await;
    assert_eq!(agent.run(&id).await.output, "host=192.168.1.1 port=3306\n");

    // `?wait=true` overrides SynFlag.
    let env = curl(&agent, "?wait=true");
    assert_eq!(
        env["Details"]["output"], "host=192.168.1.1 port=3306\n",
        "{env}"
    );

    // SynFlag 1: the same line waits and returns the exit code and the output.
    job["SynFlag"] = json!(1);
    agent.write_job("apiTest", &job);
    agent.wait_job("apiTest.py", Some(2)).await;
    let env = curl(&agent, "");
    assert_eq!(env["Code"], "OK", "{env}");
    assert_eq!(env["Details"]["status"], "ok");
    assert_eq!(env["Details"]["exit_code"], 0);
    assert_eq!(env["Details"]["output"], "host=192.168.1.1 port=3306\n");
}

#[tokio::test]
async fn credentials_errors_and_refusals() {
    let agent = Agent::start();
    agent.write_job(
        "hello",
        &json!({"JobName": "hello", "Command": "echo {host}", "Params": ["host"], "SynFlag": 1}),
    );
    agent.write_job(
        "failing",
        &json!({"JobName": "failing", "Command": "echo oops; exit 3", "SynFlag": 1}),
    );
    agent.wait_job("hello", None).await;
    agent.wait_job("failing", None).await;
    let http = &agent.http;

    // No credential, a wrong one, the right ones.
    let r = http.get(agent.url("/v1/status")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("Basic")
    );
    // The manager's word for it, from the shared vocabulary (it was "bad_request").
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        op_proto::api::code::UNAUTHORIZED
    );
    let r = http
        .get(agent.url("/v1/status"))
        .basic_auth(USER, Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(agent.url("/v1/status"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(agent.url("/v1/status"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http.get(agent.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "unauthorized");
    let r = http
        .post(agent.url("/api/opAgent"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["Code"], "ERROR");
    assert_eq!(
        http.get(agent.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Bad JSON: 400 in the caller's format.
    let r = http
        .post(agent.url("/api/opAgent"))
        .basic_auth(USER, Some(PASS))
        .body("{\"jobname\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["Code"], "ERROR");
    assert!(body["Message"].as_str().unwrap().contains("JSON"));
    let r = http
        .post(agent.url("/v1/jobs/hello/run"))
        .basic_auth(USER, Some(PASS))
        .body("[1,2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "bad_request");

    // Unknown job: 404.
    let (status, body) = agent
        .post_json("/api/opAgent", &json!({"jobname": "nope"}))
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["Code"], "ERROR");
    let (status, body) = agent.post_json("/v1/jobs/nope/run", &json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "not_found");

    // Missing and undeclared parameters: 400 and nothing runs.
    let (status, body) = agent
        .post_json("/api/opAgent", &json!({"jobname": "hello"}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["Message"].as_str().unwrap().contains("host"));
    let (status, _) = agent
        .post_json("/v1/jobs/hello/run", &json!({"host": "h", "port": "1"}))
        .await;
    assert_eq!(status, 400);
    let (status, _) = agent
        .post_json("/v1/jobs/hello/run", &json!({"host": ["a"]}))
        .await;
    assert_eq!(status, 400);
    assert!(agent.runs("hello").await.is_empty());

    // A failing run in sync mode: the envelope says ERROR with the exit code and output.
    let (status, body) = agent
        .post_json("/api/opAgent", &json!({"jobname": "failing"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["Code"], "ERROR");
    assert_eq!(body["Details"]["exit_code"], 3);
    assert_eq!(body["Details"]["output"], "oops\n");

    // A client of another API version is told so.
    let r = http
        .get(agent.url("/v1/status"))
        .basic_auth(USER, Some(PASS))
        .header("x-op-api-version", "99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("99"));

    // Not-found and malformed run ids.
    assert_eq!(agent.get("/v1/runs/not-a-uuid").await.status(), 400);
    assert_eq!(
        agent
            .get(&format!("/v1/runs/{}", uuid::Uuid::now_v7()))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn host_selection_applies_in_standalone_mode() {
    let agent = Agent::start();
    // The test agent is `test-node` with IP 10.9.8.7.
    agent.write_job(
        "mine",
        &json!({"JobName": "mine", "Command": "true", "WhiteHosts": ["10.9.8.0/24"]}),
    );
    agent.write_job(
        "by-name",
        &json!({"JobName": "by-name", "Command": "true", "WhiteHosts": ["test-*"]}),
    );
    // Never substring matching: 10.9.8.71 is another host.
    agent.write_job(
        "other",
        &json!({"JobName": "other", "Command": "true", "WhiteHosts": ["10.9.8.71"]}),
    );
    agent.write_job(
        "black",
        &json!({"JobName": "black", "Command": "true", "BlackHosts": ["test-node"]}),
    );
    for job in ["mine", "by-name", "other", "black"] {
        agent.wait_job(job, None).await;
    }
    let status = agent.status().await;
    let selected = |name: &str| {
        status["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .unwrap()["selected"]
            .as_bool()
            .unwrap()
    };
    assert!(selected("mine") && selected("by-name"));
    assert!(!selected("other") && !selected("black"));
    assert_eq!(
        agent.invoke_sync("mine", &json!({})).await.status,
        RunStatus::Ok
    );
    let (status, body) = agent.post_json("/v1/jobs/other/run", &json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("excludes this host")
    );
}

/// The basic-auth password may be a person's choice: a guessing loop from one address is
/// blocked (429 with Retry-After, the right password included), as on the manager, while every
/// other address (the manager's, say) is served as before.
#[tokio::test]
async fn a_password_guessing_loop_is_blocked_for_its_address_only() {
    let agent = Agent::start();
    let max = op_tls::auth_failures::MAX_AUTH_FAILURES;
    let mut blocked_after = None;
    for i in 1..=max + 5 {
        let r = agent
            .http
            .get(agent.url("/v1/status"))
            .basic_auth(USER, Some(format!("guess-{i}")))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            401 => {}
            429 => {
                blocked_after = Some(i);
                break;
            }
            other => panic!("attempt {i}: {other}"),
        }
    }
    assert_eq!(blocked_after, Some(max + 1));
    // From that address, even the right password is refused, with how long to wait.
    let r = agent.get("/v1/status").await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        op_proto::api::code::TOO_MANY_AUTH_FAILURES
    );
    // The seed's endpoint answers in its envelope.
    let r = agent
        .http
        .post(agent.url("/api/opAgent"))
        .basic_auth(USER, Some(PASS))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.json::<Value>().await.unwrap()["Code"], "ERROR");
    // Another address is not locked out.
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let r = other
        .get(agent.url("/v1/status"))
        .basic_auth(USER, Some(PASS))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
