//! Bad input gets a clear 4xx and changes nothing (DESIGN section 9).

use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let m = TestManager::start_with(|a| a.json_body_limit = Some("1MiB".into())).await;
    let admin = m.admin();
    admin
        .save_job_text("ls-l", &seed_task("ll.json"))
        .await
        .unwrap();
    let before = serde_json::to_string(&admin.list_jobs().await.unwrap()).unwrap();
    let audit_before = admin.audit(None, None).await.unwrap().len();

    let put = |name: &str, body: String| {
        admin
            .request(Method::PUT, &format!("/v1/jobs/{name}"))
            .header("content-type", "application/json")
            .body(body)
    };
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str, &str)> = vec![
        (
            "invalid cron",
            put(
                "ls-l",
                r#"{"JobName":"ls-l","Command":"ls","CronExpr":"* * * *"}"#.into(),
            ),
            400,
            "invalid_job",
            "CronExpr",
        ),
        (
            "cron that never fires again",
            put(
                "ls-l",
                r#"{"JobName":"ls-l","Command":"ls","CronExpr":"0 0 0 1 1 * 2001"}"#.into(),
            ),
            400,
            "invalid_job",
            "CronExpr",
        ),
        (
            "unknown field",
            put(
                "ls-l",
                r#"{"JobName":"ls-l","Command":"ls","CronExp":"* * * * *"}"#.into(),
            ),
            400,
            "invalid_job",
            "CronExpr",
        ),
        (
            "invalid name",
            put(
                "bad%20name",
                r#"{"JobName":"bad name","Command":"ls"}"#.into(),
            ),
            400,
            "invalid_name",
            "bad name",
        ),
        (
            "name differs from the URL",
            put("ls-l", r#"{"JobName":"other","Command":"ls"}"#.into()),
            400,
            "name_mismatch",
            "other",
        ),
        (
            "malformed JSON",
            put("ls-l", r#"{"JobName":"ls-l","Command":"#.into()),
            400,
            "invalid_job",
            "JSON",
        ),
        (
            "wrong API version",
            reqwest::Client::new()
                .put(format!("{}/v1/jobs/ls-l", m.url))
                .bearer_auth(&m.admin_token)
                .header("x-op-api-version", "7")
                .body(seed_task("ll.json")),
            400,
            "api_version_mismatch",
            "version 7; this manager speaks API version 1",
        ),
        (
            "malformed JSON to a JSON endpoint",
            admin
                .request(Method::POST, "/v1/tokens")
                .header("content-type", "application/json")
                .body("{\"name\":"),
            400,
            "malformed_json",
            "",
        ),
        (
            "unknown field in a JSON endpoint",
            admin
                .request(Method::POST, "/v1/tokens")
                .header("content-type", "application/json")
                .body(r#"{"name":"x","scope":"viewer","admin":true}"#),
            400,
            "invalid_body",
            "admin",
        ),
        (
            "a token that would expire at once",
            admin
                .request(Method::POST, "/v1/tokens")
                .header("content-type", "application/json")
                .body(r#"{"name":"x","scope":"viewer","expires_in_secs":0}"#),
            400,
            "invalid_body",
            "expire at once",
        ),
        (
            "unknown scope",
            admin
                .request(Method::POST, "/v1/tokens")
                .header("content-type", "application/json")
                .body(r#"{"name":"x","scope":"root"}"#),
            400,
            "invalid_body",
            "root",
        ),
        (
            "wrong method",
            admin.request(Method::POST, "/v1/jobs"),
            405,
            "method_not_allowed",
            "method",
        ),
        (
            "unknown route",
            admin.request(Method::GET, "/v1/nope"),
            404,
            "not_found",
            "route",
        ),
        (
            "bad run query",
            admin.request(Method::GET, "/v1/runs?status=fine"),
            400,
            "invalid_query",
            "",
        ),
    ];
    // Every string of a task file is bounded (a valid 10 KB or 400 KB CronExpr was saved).
    let long_cron = |bytes: usize| {
        format!(
            r#"{{"JobName":"ls-l","Command":"ls","CronExpr":"{} * * * *"}}"#,
            vec!["0"; bytes / 2].join(",")
        )
    };
    let bounded: Vec<(&str, String, &str)> = vec![
        ("a valid 10 KB CronExpr", long_cron(10_000), "CronExpr"),
        ("a valid 400 KB CronExpr", long_cron(400_000), "CronExpr"),
        (
            "a 2 KB TimeZone",
            format!(
                r#"{{"JobName":"ls-l","Command":"ls","TimeZone":"{}"}}"#,
                "x".repeat(2000)
            ),
            "TimeZone",
        ),
        (
            "a 2 KB host pattern",
            format!(
                r#"{{"JobName":"ls-l","Command":"ls","WhiteHosts":["{}"]}}"#,
                "h".repeat(2000)
            ),
            "WhiteHosts",
        ),
        (
            "a 40 KB Env value",
            format!(
                r#"{{"JobName":"ls-l","Command":"ls","Env":{{"A":"{}"}}}}"#,
                "v".repeat(40_000)
            ),
            "Env",
        ),
    ];
    let cases = cases.into_iter().chain(
        bounded
            .into_iter()
            .map(|(what, body, field)| (what, put("ls-l", body), 400, "invalid_job", field)),
    );
    for (what, req, want_status, want_code, want_text) in cases {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body: op_proto::ErrorBody = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("{what}: body is not an ErrorBody: {e}"));
        assert_eq!(
            (status, body.code.as_str()),
            (want_status, want_code),
            "{what}: {body:?}"
        );
        assert!(
            body.message.contains(want_text) || body.details.iter().any(|d| d.contains(want_text)),
            "{what}: {body:?} should mention {want_text:?}"
        );
        assert!(
            body.message.len() + body.details.iter().map(String::len).sum::<usize>() < 2_000,
            "{what}: a clear error, not an echo of the input: {body:?}"
        );
    }
    let (status, body) = send_huge(&m.url, &m.admin_token, 20 * 1024 * 1024).await;
    assert_eq!(status, 413, "{body}");
    let body: op_proto::ErrorBody = serde_json::from_str(&body).unwrap();
    assert_eq!(body.code, "payload_too_large");
    assert!(body.message.contains("1048576"), "{body:?}");

    let after = serde_json::to_string(&admin.list_jobs().await.unwrap()).unwrap();
    assert_eq!(before, after, "bad input changed the jobs");
    assert_eq!(admin.audit(None, None).await.unwrap().len(), audit_before);
    assert!(admin.list_tokens().await.unwrap().len() == 2);
    m.stop().await;
}

/// PUTs a body of `len` bytes the way a client that does not stop to read would start it: the
/// headers and the first 64 KiB. The server must answer 413 from the declared length without
/// reading the rest (a client like reqwest then sees a broken pipe, so this speaks HTTP itself).
async fn send_huge(url: &str, token: &str, len: usize) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT /v1/jobs/ls-l HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let _ = stream.write_all(&vec![b'x'; 64 * 1024]).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_is_cut_off() {
    let m = TestManager::start_with(|a| a.header_read_timeout = Some("2s".into())).await;
    let addr = m.url.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /v1/jobs/ls-l HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"JobName\":",
        m.admin_token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The answer may come on a kept-alive connection: read until the head is complete.
    let mut response = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        while !response.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the server gives up on the body");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 4"), "{text}");
    assert!(m.admin().list_jobs().await.unwrap().is_empty());
    m.stop().await;
}

/// The hostile requests of DESIGN section 9: each gets a clear 4xx, and the store is the same
/// afterwards (jobs, nodes, tokens, runs and the audit log compared whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_a_clear_4xx_and_change_nothing() {
    let m = TestManager::start().await;
    let admin = m.admin();
    admin
        .save_job_text(
            "ls-l",
            r#"{"JobName":"ls-l","Command":"ls -l {{dir}}","Params":["dir"]}"#,
        )
        .await
        .unwrap();
    let snapshot = || async {
        (
            serde_json::to_string(&admin.list_jobs().await.unwrap()).unwrap(),
            serde_json::to_string(&admin.list_nodes().await.unwrap()).unwrap(),
            serde_json::to_string(&admin.list_tokens().await.unwrap()).unwrap(),
            admin.runs(&Default::default()).await.unwrap().len(),
            admin.audit(None, None).await.unwrap().len(),
        )
    };
    let before = snapshot().await;

    let nested = format!(
        r#"{{"JobName":"deep","Command":"ls","Params":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let nested_token = format!(
        r#"{{"name":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let long_cron = format!(
        r#"{{"JobName":"cron10k","Command":"ls","CronExpr":"{}"}}"#,
        "1,".repeat(5_000) + "1"
    );
    let many_params_job = format!(
        r#"{{"JobName":"params","Command":"ls","Params":[{}]}}"#,
        (0..10_000)
            .map(|i| format!(r#""p{i}""#))
            .collect::<Vec<_>>()
            .join(",")
    );
    let many_params_run = serde_json::json!({
        "all": true,
        "params": (0..10_000).map(|i| (format!("p{i}"), "x".to_string())).collect::<std::collections::BTreeMap<_, _>>(),
    })
    .to_string();
    let put = |path: &str, body: Vec<u8>| {
        admin
            .request(Method::PUT, path)
            .header("content-type", "application/json")
            .body(body)
    };
    let cases: Vec<(&str, reqwest::RequestBuilder)> = vec![
        (
            "deeply nested task file",
            put("/v1/jobs/deep", nested.into_bytes()),
        ),
        (
            "deeply nested JSON body",
            admin
                .request(Method::POST, "/v1/tokens")
                .header("content-type", "application/json")
                .body(nested_token),
        ),
        (
            "invalid UTF-8",
            put(
                "/v1/jobs/utf",
                b"{\"JobName\":\"utf\",\"Command\":\"ls \xff\xfe\"}".to_vec(),
            ),
        ),
        (
            "job name with a slash",
            put(
                "/v1/jobs/a%2Fb",
                br#"{"JobName":"a/b","Command":"ls"}"#.to_vec(),
            ),
        ),
        (
            "job name ..",
            put(
                "/v1/jobs/%2E%2E",
                br#"{"JobName":"..","Command":"ls"}"#.to_vec(),
            ),
        ),
        (
            "job name with NUL",
            put(
                "/v1/jobs/a%00b",
                b"{\"JobName\":\"a\\u0000b\",\"Command\":\"ls\"}".to_vec(),
            ),
        ),
        (
            "a 10 KB cron expression",
            put("/v1/jobs/cron10k", long_cron.into_bytes()),
        ),
        (
            "10,000 declared params",
            put("/v1/jobs/params", many_params_job.into_bytes()),
        ),
        (
            "10,000 params to a run",
            admin
                .request(Method::POST, "/v1/jobs/ls-l/run")
                .header("content-type", "application/json")
                .body(many_params_run),
        ),
    ];
    for (what, req) in cases {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert!(
            (400..500).contains(&status),
            "{what}: {status} {}",
            &text[..text.len().min(300)]
        );
        let body: op_proto::ErrorBody = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{what}: not an ErrorBody ({e}): {text}"));
        assert!(
            !body.message.is_empty() && body.message.len() < 2_000,
            "{what}: the message is one clear line: {body:?}"
        );
    }
    // A declared 1 GB body is refused from its Content-Length alone.
    let (status, _) = send_huge(&m.url, &m.admin_token, 1 << 30).await;
    assert_eq!(status, 413);
    assert_eq!(snapshot().await, before, "hostile input changed the store");
    m.stop().await;
}
