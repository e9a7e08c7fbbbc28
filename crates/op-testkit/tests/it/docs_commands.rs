//! Every `agentcli` command line in README.md and docs/*.md, run as written against a live fleet
//! (issue 17: several documented commands failed as written). Lines come from code blocks and
//! from inline code that starts with `agentcli `; continuation lines are joined and `# comments`
//! dropped. A synopsis line runs too: `[optional]` parts are included, each `a|b` alternative and
//! each ` | `-separated subcommand runs once, and each placeholder (`JOBNAME`, `HOST`, `FILE`...)
//! becomes a fixture this test creates. A placeholder without a fixture fails the test, so new
//! docs get a fixture rather than a silent skip.
//!
//! The fleet: three managers (so the cluster commands have members to move and remove) and three
//! agents: `web-01` (127.0.0.1 and 10.0.0.7, label role=web), `db-01` (192.168.1.1) and `spare`
//! (which the `forget` lines forget). Commands run with `bash -c` in a directory that holds an
//! `agentcli.toml` (as the quick start writes), a `crates` link to this checkout and the files
//! the docs name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use op_testkit::{Agent, AgentOptions, Cluster, FAST_RAFT, bin_dir, wait_until};

use crate::support::{LONG, runs_of};

/// Lines that cannot run against one machine's fleet, each with its reason (file, line, reason).
/// Keep this short: prefer a fixture.
const CANNOT_RUN: &[(&str, &str, &str)] = &[
    (
        "README.md",
        "agentcli --manager https://mgr-1.example.com:8090 --ca tls/ca.pem --cert tls/client-ops.pem --key tls/client-ops.key get nodes",
        "a TLS manager reached as mgr-1.example.com; tls.rs runs agentcli's --ca/--cert/--key against a TLS manager",
    ),
    (
        "docs/security.md",
        "agentcli --manager https://mgr-1.example.com:8090 --ca /etc/op-agent/tls/ca.pem --cert /etc/op-agent/tls/client-ops.pem --key /etc/op-agent/tls/client-ops.key get nodes",
        "the same, with the certificates installed under /etc/op-agent/tls",
    ),
    (
        "docs/cluster.md",
        "agentcli cluster add ID --api URL --raft URL",
        "needs a fourth manager started by hand for it; cluster.rs adds members",
    ),
    (
        "docs/cluster.md",
        "agentcli cluster remove 3",
        "README.md's identical line already removed member 3",
    ),
    (
        "docs/cluster.md",
        "agentcli --stale",
        "a global flag named in prose, not a command (`agentcli --stale cluster status` runs)",
    ),
];

/// One `agentcli` line of the docs.
#[derive(Debug, Clone)]
struct DocLine {
    file: String,
    line: usize,
    text: String,
}

/// The workspace root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Drops a trailing `# comment` (outside quotes) and surrounding space.
fn strip_comment(text: &str) -> String {
    let mut quote = None;
    let mut prev = ' ';
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev.is_whitespace() => return text[..i].trim().to_string(),
            _ => {}
        }
        prev = c;
    }
    text.trim().to_string()
}

/// Every `agentcli` line of README.md and docs/*.md, in order.
fn doc_lines() -> Vec<DocLine> {
    let root = repo();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut out = Vec::new();
    for path in files {
        let file = path.strip_prefix(&root).unwrap().display().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut fenced = false;
        // An inline code span being read: the line it starts on, its text so far.
        let mut span: Option<(usize, String)> = None;
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i];
            let start = i;
            i += 1;
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                span = None;
                continue;
            }
            if fenced {
                let t = line.trim_start();
                let t = t.strip_prefix("$ ").unwrap_or(t);
                if !t.starts_with("agentcli ") {
                    continue;
                }
                let mut joined = t.to_string();
                while joined.trim_end().ends_with('\\') && i < lines.len() {
                    joined = format!(
                        "{} {}",
                        joined.trim_end().trim_end_matches('\\').trim_end(),
                        lines[i].trim()
                    );
                    i += 1;
                }
                out.push(DocLine {
                    file: file.clone(),
                    line: start + 1,
                    text: strip_comment(&joined),
                });
            } else if line.trim().is_empty() {
                // Inline code never spans paragraphs.
                span = None;
            } else {
                // Inline code may wrap onto the next line.
                for c in line.chars() {
                    match (&mut span, c) {
                        (None, '`') => span = Some((start + 1, String::new())),
                        (Some((at, code)), '`') => {
                            if code.starts_with("agentcli ") {
                                out.push(DocLine {
                                    file: file.clone(),
                                    line: *at,
                                    text: strip_comment(code),
                                });
                            }
                            span = None;
                        }
                        (Some((_, code)), c) => code.push(c),
                        (None, _) => {}
                    }
                }
                if let Some((_, code)) = &mut span {
                    code.push(' ');
                }
            }
        }
    }
    out
}

/// Splits `text` at `sep` where it is outside quotes.
fn split_unquoted(text: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quote = None;
    for c in text.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c == sep => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        parts.last_mut().unwrap().push(c);
    }
    parts
}

/// Whether `word` is a synopsis placeholder (`JOBNAME`, `H`, `HOSTNAME-OR-IP`).
fn is_placeholder(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_uppercase())
        && word
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-')
}

/// The commands one doc line stands for: ` | ` subcommands, `[optional]` parts included, one run
/// per `a|b` alternative, placeholders replaced by `values` (`{n}` in a value becomes the
/// variant's number, for names that must differ). A variant that deletes runs last.
fn expand(text: &str, values: &HashMap<&str, String>) -> Vec<String> {
    let segments: Vec<String> = split_unquoted(text, '|');
    // ` | ` (spaced) separates subcommands; a bare `a|b` is an alternative inside a word.
    let mut commands: Vec<String> = Vec::new();
    let mut current = String::new();
    for (i, seg) in segments.iter().enumerate() {
        if i == 0 {
            current = seg.clone();
        } else if segments[i - 1].ends_with(' ') && seg.starts_with(' ') {
            commands.push(current.trim().to_string());
            let first: Vec<&str> = commands[0].split_whitespace().take(2).collect();
            current = format!("{} {}", first.join(" "), seg.trim());
        } else {
            current = format!("{current}|{seg}");
        }
    }
    commands.push(current.trim().to_string());

    let mut variants: Vec<Vec<String>> = Vec::new();
    for command in commands {
        let bare: String = {
            let mut quote = None;
            command
                .chars()
                .filter(|&c| {
                    match (quote, c) {
                        (None, '\'' | '"') => quote = Some(c),
                        (Some(q), c) if c == q => quote = None,
                        (None, '[' | ']') => return false,
                        _ => {}
                    }
                    true
                })
                .collect()
        };
        // Words, each with its alternatives.
        let words: Vec<Vec<String>> = split_unquoted(&bare, ' ')
            .into_iter()
            .filter(|w| !w.is_empty())
            .map(|w| {
                let quoted = w.starts_with('\'') || w.starts_with('"');
                if quoted {
                    vec![w]
                } else {
                    w.trim_end_matches("...")
                        .split('|')
                        .map(str::to_string)
                        .collect()
                }
            })
            .collect();
        variants.push(words.iter().map(|w| w[0].clone()).collect());
        for (i, word) in words.iter().enumerate() {
            for alt in &word[1..] {
                let mut v: Vec<String> = words.iter().map(|w| w[0].clone()).collect();
                v[i] = alt.clone();
                variants.push(v);
            }
        }
    }
    variants.sort_by_key(|v| v.iter().any(|w| w == "delete"));
    variants
        .into_iter()
        .enumerate()
        .map(|(n, words)| {
            words
                .iter()
                .map(|w| {
                    let (open, inner, close) = match w.strip_prefix('\'') {
                        Some(rest) => ("'", rest.trim_end_matches('\''), "'"),
                        None => ("", w.as_str(), ""),
                    };
                    if !is_placeholder(inner) {
                        return w.clone();
                    }
                    let value = values.get(inner).unwrap_or_else(|| {
                        panic!("{text:?}: no fixture for the placeholder {inner}; add one")
                    });
                    format!("{open}{}{close}", value.replace("{n}", &n.to_string()))
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// What a command must do.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// End with one of these exit codes.
    Exit(&'static [i32]),
    /// Keep running (a live view) until stopped, having printed something.
    Live,
}

/// The documented outcome of a line: 0, or 0/1 where the docs say 1 reports a problem.
fn expect(text: &str) -> Expect {
    if text.starts_with("agentcli notify test ") {
        // The docs' receivers are example.com addresses this machine cannot reach: exit 1 is
        // the documented "delivery failed"; a missing rule or a bad call (2) still fails here.
        // op-cli's notify tests deliver to a real receiver.
        return Expect::Exit(&[0, 1]);
    }
    if text.starts_with("agentcli agent upgrade status") {
        // Exit 1 names a host whose upgrade failed: the docs fleet's agents are not started by
        // `op-agent guard`, so they refuse to replace themselves (agent_upgrade.rs upgrades
        // guarded agents).
        return Expect::Exit(&[0, 1]);
    }
    if text.starts_with("agentcli analysis ") {
        // "exit 0 once every host has it"; 1 while a host is behind or a job failed.
        return Expect::Exit(&[0, 1]);
    }
    match text {
        "agentcli top" => Expect::Live,
        // Every host's exit code decides; this machine may have no mount named "data".
        "agentcli exec --host web-01 --host 10.0.0.7 --timeout 60 -- 'df -h | grep data'" => {
            Expect::Exit(&[0, 1])
        }
        _ => Expect::Exit(&[0]),
    }
}

/// The fixtures: a fleet, and what the docs' placeholders stand for.
struct Fixtures {
    cluster: Cluster,
    _agents: Vec<Agent>,
    cwd: tempfile::TempDir,
    deploy: PathBuf,
    values: HashMap<&'static str, String>,
    /// Replacements of literal text in lines (elided ids, paths outside the test's dirs).
    literals: Vec<(String, String)>,
}

/// Runs `agentcli ARGS` in the fixture dir (for setup), returning stdout.
fn agentcli(cwd: &Path, args: &[&str]) -> String {
    let out = Command::new(bin_dir().join("agentcli"))
        .args(args)
        .current_dir(cwd)
        .env_remove("OP_MANAGER")
        .env_remove("OP_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "agentcli {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The first word of `text` that is a UUID.
fn uuid_in(text: &str) -> String {
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .find(|w| uuid::Uuid::parse_str(w).is_ok())
        .unwrap_or_else(|| panic!("no id in {text:?}"))
        .to_string()
}

async fn fixtures() -> Fixtures {
    let cluster = Cluster::start(3, FAST_RAFT).await;
    let agent = |name: &str, ips: &[&str], labels: &[&str]| {
        let mut o = AgentOptions::new(name, ips[0]).cluster(&cluster);
        o.ips = ips.iter().map(|s| s.to_string()).collect();
        o.labels = labels.iter().map(|s| s.to_string()).collect();
        Agent::start(o)
    };
    let agents = vec![
        agent("web-01", &["127.0.0.1", "10.0.0.7"], &["role=web"]),
        agent("db-01", &["192.168.1.1"], &[]),
        agent("spare", &["127.0.0.9"], &[]),
    ];
    let c = cluster.client(0);
    wait_until(LONG, "three agents Ready", || async {
        c.list_nodes().await.is_ok_and(|n| {
            n.iter()
                .filter(|n| n.status == op_proto::NodeStatus::Ready)
                .count()
                == 3
        })
    })
    .await;

    let cwd = tempfile::tempdir().unwrap();
    let dir = cwd.path();
    // A copy of the seed's task files, not a link into the checkout: a documented line such as
    // `download NAME -o FILE --force` must never write into the repository.
    let seed = dir.join("crates/op-proto/tests/data/seed");
    std::fs::create_dir_all(&seed).unwrap();
    for entry in std::fs::read_dir(repo().join("crates/op-proto/tests/data/seed")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, seed.join(path.file_name().unwrap())).unwrap();
        }
    }
    let token_file = dir.join("admin.token");
    std::fs::write(&token_file, &cluster.admin_token).unwrap();
    std::fs::write(
        dir.join("agentcli.toml"),
        format!(
            "manager = \"{}\"\ntoken_file = \"{}\"\n",
            cluster.members[0].api_url,
            token_file.display()
        ),
    )
    .unwrap();
    let deploy = dir.join("deploy");
    std::fs::create_dir_all(&deploy).unwrap();
    std::fs::write(dir.join("notes.txt"), "a package\n").unwrap();
    // The body template docs/notifications.md's `notify add ... --template slack.j2` reads.
    std::fs::write(
        dir.join("slack.j2"),
        r#"{"text": {{ (summary ~ "\n" ~ hosts_text)|tojson }}}"#,
    )
    .unwrap();
    // The secret value docs/security.md's `secret set db/pw --from-file db-pw.txt` reads.
    std::fs::write(dir.join("db-pw.txt"), "an example password\n").unwrap();
    std::fs::create_dir_all(dir.join("python_project_dir")).unwrap();
    std::fs::write(
        dir.join("python_project_dir/test.py"),
        "print('hello from the package')\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("python_test.json"),
        format!(
            r#"{{"JobName":"python_test","Command":"python3 {}/python_project_dir/test.py","CronExpr":"","OnceJob":0}}"#,
            deploy.display()
        ),
    )
    .unwrap();

    // Jobs the docs run by name.
    for (name, task) in [
        (
            "apiTest.py",
            r#"{"JobName":"apiTest.py","Command":"echo host={host} port={port}","CronExpr":"","SynFlag":1}"#,
        ),
        (
            "greet",
            r#"{"JobName":"greet","Command":"echo {k}","CronExpr":"","SynFlag":1}"#,
        ),
        (
            "deploy.sh",
            r#"{"JobName":"deploy.sh","Command":"true","CronExpr":""}"#,
        ),
        (
            "report.py",
            r#"{"JobName":"report.py","Command":"true","CronExpr":""}"#,
        ),
        (
            "scratch",
            r#"{"JobName":"scratch","Command":"true","CronExpr":""}"#,
        ),
        (
            "slow",
            r#"{"JobName":"slow","Command":"sleep 300","CronExpr":""}"#,
        ),
        (
            "tick",
            r#"{"JobName":"tick","Command":"echo tick; sleep 5","CronExpr":"* * * * * * *","WhiteHosts":["web-01"]}"#,
        ),
    ] {
        c.save_job_text(name, task).await.unwrap();
    }
    // The README's first example, so its logs exist when the lines after it read them.
    agentcli(dir, &["save", "crates/op-proto/tests/data/seed/ll.json"]);
    wait_until(LONG, "ls-l ran on every agent", || async {
        runs_of(&c, "ls-l").await.len() == 3
    })
    .await;
    // Two versions of a package, so an older one can be named.
    agentcli(dir, &["upload", "notes.txt", deploy.to_str().unwrap()]);
    agentcli(dir, &["upload", "notes.txt", deploy.to_str().unwrap()]);
    let versions = c.package_versions("notes.txt").await.unwrap();
    let first = versions.iter().map(|v| v.version).min().unwrap();
    // A staged rollout that waits (issue 21), for the `rollout` lines to pause, resume, promote.
    std::fs::write(dir.join("staged.txt"), "staged").unwrap();
    agentcli(
        dir,
        &[
            "upload",
            "staged.txt",
            deploy.to_str().unwrap(),
            "--rollout",
            "1",
            "--step-wait",
            "1h",
        ],
    );
    let rollout = c.rollouts().await.unwrap()[0].id.to_string();
    // An invocation still running, to get and cancel.
    let invocation = uuid_in(&agentcli(dir, &["run", "slow", "--all", "--async"]));
    // A finished invocation whose one host failed, to retry: its command fails the first time
    // only, so every documented retry of it succeeds.
    let marker = dir.join("retry-marker");
    let failed = match c
        .exec(&op_proto::invoke::InvokeRequest {
            command: Some(format!(
                "[ -e {0} ] || {{ touch {0}; exit 3; }}",
                marker.display()
            )),
            hosts: vec!["web-01".into()],
            wait: Some(false),
            ..Default::default()
        })
        .await
        .unwrap()
    {
        op_client::Started::Accepted(acc) => acc.invocation_id,
        op_client::Started::Stream(_) => panic!("an exec with wait false streamed"),
    };
    wait_until(LONG, "the invocation to retry has failed", || async {
        c.invocation(failed)
            .await
            .is_ok_and(|v| v.summary.failed == 1)
    })
    .await;
    let token = c
        .create_token(&op_proto::api::CreateTokenRequest {
            name: "to-revoke".into(),
            scope: op_proto::api::Scope::Viewer,
            expires_in_secs: None,
        })
        .await
        .unwrap()
        .info
        .id;
    let since = (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    let values: HashMap<&'static str, String> = [
        ("ALL", "ALL".to_string()),
        ("IP", "127.0.0.1".into()),
        ("HOSTNAME", "web-01".into()),
        ("HOSTNAME-OR-IP", "web-01".into()),
        ("HOST", "web-01".into()),
        ("H", "web-01".into()),
        ("NODE", "spare".into()),
        ("JOBNAME", "ls-l".into()),
        ("JOB", "ls-l".into()),
        ("LIMIT", "5".into()),
        ("ONCEJOBVERSION", "1".into()),
        ("FILE", "crates/op-proto/tests/data/seed/ll.json".into()),
        ("NAME", "notes.txt".into()),
        ("VERSION", first.to_string()),
        ("DEPLOYDIR", deploy.display().to_string()),
        ("DIR", "python_project_dir".into()),
        ("ID", invocation.clone()),
        ("ROLLOUT-ID", rollout),
        ("FAILED-ID", failed.to_string()),
        ("TIME", since),
        ("DURATION", "1h".into()),
        ("EXPR", "*/5 * * * *".into()),
        ("N", "3".into()),
        ("ZONE", "Europe/Paris".into()),
        // Agent self-upgrade: the test build's second agent binary and its version.
        (
            "BINARY",
            bin_dir().join("op-agent-next").display().to_string(),
        ),
        ("AGENTVERSION", format!("{}.1", env!("CARGO_PKG_VERSION"))),
    ]
    .into_iter()
    .collect();
    let literals = vec![
        ("0193b6a2-...".to_string(), invocation),
        (
            "/data/op-agent/src".to_string(),
            deploy.display().to_string(),
        ),
        ("revoke ID".to_string(), format!("revoke {token}")),
    ];
    Fixtures {
        cluster,
        _agents: agents,
        cwd,
        deploy,
        values,
        literals,
    }
}

/// Placeholders that mean another fixture on one line.
fn overrides(text: &str) -> &'static [(&'static str, &'static str)] {
    match text {
        "agentcli delete|enable|disable JOBNAME" => &[("JOBNAME", "scratch")],
        "agentcli logs JOBNAME [HOST] --follow" => &[("JOBNAME", "tick")],
        "agentcli run JOBNAME --host H --param k=v" => &[("JOBNAME", "greet")],
        "agentcli upload FILE|DIR [DEPLOYDIR]" => &[("FILE", "notes.txt")],
        "agentcli download NAME [VERSION] [-o FILE] [--force]" => &[("FILE", "downloaded.out")],
        "agentcli cluster transfer-leader [ID]" => &[("ID", "2")],
        "agentcli forget HOST" => &[("HOST", "spare")],
        // Token names are unique.
        "agentcli token create --scope viewer|operator --name NAME" => &[("NAME", "console-{n}")],
        _ => &[],
    }
}

/// What one command did.
struct Ran {
    code: Option<i32>,
    output: String,
}

fn run_line(cwd: &Path, command: &str, expect: Expect) -> Ran {
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out_file = cwd.join(".out");
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(command)
        .current_dir(cwd)
        .env("PATH", path)
        .env_remove("OP_MANAGER")
        .env_remove("OP_TOKEN")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(std::fs::File::create(cwd.join(".err")).unwrap())
        .spawn()
        .unwrap();
    let limit = match expect {
        Expect::Live => Duration::from_secs(3),
        Expect::Exit(_) => Duration::from_secs(120),
    };
    let started = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = format!(
        "{}{}",
        std::fs::read_to_string(&out_file).unwrap_or_default(),
        std::fs::read_to_string(cwd.join(".err")).unwrap_or_default()
    );
    Ran { code, output }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_agentcli_line_in_the_docs_runs_as_documented() {
    let lines = doc_lines();
    assert!(lines.len() > 40, "found only {} lines", lines.len());
    let listed =
        |text: &str, file: &str| CANNOT_RUN.iter().any(|(f, t, _)| *t == text && *f == file);
    // A listed line that left the docs must leave the lists too.
    for (file, text, _) in CANNOT_RUN {
        assert!(
            lines.iter().any(|l| l.file == *file && l.text == *text),
            "CANNOT_RUN names a line no longer in {file}: {text}"
        );
    }

    let fx = fixtures().await;
    let mut failures = Vec::new();
    let mut ran = 0;
    for line in &lines {
        if listed(&line.text, &line.file) {
            continue;
        }
        let mut values = fx.values.clone();
        for (k, v) in overrides(&line.text) {
            values.insert(k, v.to_string());
        }
        let mut text = line.text.clone();
        for (from, to) in &fx.literals {
            text = text.replace(from, to);
        }
        let expected = expect(&line.text);
        for command in expand(&text, &values) {
            ran += 1;
            let r = run_line(fx.cwd.path(), &command, expected);
            let ok = match expected {
                Expect::Exit(codes) => r.code.is_some_and(|c| codes.contains(&c)),
                Expect::Live => r.code.is_none() && !r.output.is_empty(),
            };
            if !ok {
                failures.push(format!(
                    "{}:{}: {}\n    ran: {command}\n    exit: {:?}, expected {expected:?}\n    {}",
                    line.file,
                    line.line,
                    line.text,
                    r.code,
                    r.output.trim().replace('\n', "\n    ")
                ));
            }
        }
    }
    assert!(ran > 60, "ran only {ran} commands");
    assert!(
        failures.is_empty(),
        "{} documented command(s) did not run as documented:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The packages the docs uploaded reached this test's deploy dir, not /data.
    assert!(fx.deploy.join("notes.txt").exists());
    drop(fx.cluster);
}
