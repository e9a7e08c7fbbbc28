//! Packages end to end: agentcli uploads to a real manager, real agents download, verify, unpack
//! and switch; rollback, the download cap, hostile archives, corrupted blobs, kill -9 mid-deploy
//! and byte-identical downloads (issue 7's scenarios).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use op_client::Client;
use op_proto::package::{InstalledPackage, PackageState};
use op_proto::{NodeInfo, RunStatus};
use op_testkit::{Agent, Manager, ManagerOptions, bin, wait_until};
use sha2::{Digest, Sha256};

use crate::support::{LONG, fleet, runs_of};

/// Runs agentcli against `m` with the admin token.
fn agentcli(m: &Manager, args: &[&str]) -> Output {
    Command::new(bin("agentcli"))
        .args(args)
        .env("OP_MANAGER", &m.api_url)
        .env("OP_TOKEN", &m.admin_token)
        .env("TZ", "UTC")
        .output()
        .expect("agentcli runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "agentcli failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Waits until `analysis packages` finds every host on the current version of every package.
async fn analysis_clean(m: &Manager) -> String {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let out = agentcli(m, &["analysis", "packages"]);
        let last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        match out.status.code() {
            Some(0) => return last,
            Some(1) => {}
            other => panic!("analysis packages failed with {other:?}: {last}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "analysis packages never came clean; last output:\n{last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn report_of(c: &Client, agent: &Agent, name: &str) -> Option<InstalledPackage> {
    let node: NodeInfo = c.get_node(&agent.options.node_name).await.ok()?;
    node.packages.into_iter().find(|p| p.name == name)
}

/// Waits until `agent` reports `name` failed for version `target`; returns its report.
async fn failed(c: &Client, agent: &Agent, name: &str, target: u64) -> InstalledPackage {
    wait_until(
        LONG,
        &format!("{name} {target} reported failed"),
        || async {
            report_of(c, agent, name).await.is_some_and(|p| {
                p.state == PackageState::Failed && p.target_version == Some(target)
            })
        },
    )
    .await;
    report_of(c, agent, name).await.unwrap()
}

fn version_of(upload_output: &str) -> u64 {
    upload_output
        .lines()
        .nth(1)
        .and_then(|l| l.split('\t').nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no version in {upload_output:?}"))
}

/// A tar member written byte for byte, as a hostile tool would.
struct Member<'a> {
    name: &'a str,
    kind: tar::EntryType,
    data: &'a [u8],
    link: &'a str,
}

fn member<'a>(name: &'a str, kind: tar::EntryType, data: &'a [u8], link: &'a str) -> Member<'a> {
    Member {
        name,
        kind,
        data,
        link,
    }
}

fn tar_gz(members: &[Member<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = tar::Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..m.name.len()].copy_from_slice(m.name.as_bytes());
            gnu.linkname[..m.link.len()].copy_from_slice(m.link.as_bytes());
        }
        h.set_entry_type(m.kind);
        h.set_size(m.data.len() as u64);
        h.set_mode(if m.kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, m.data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut e, &tar).unwrap();
    e.finish().unwrap()
}

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

#[tokio::test]
async fn seed_flow_upload_a_project_then_a_job_runs_it_on_every_agent() {
    let m = Manager::start();
    let agents = fleet(&m, 3, &[]).await;
    let c = m.client();
    let work = tempfile::tempdir().unwrap();
    // The seed's layout: a project directory pushed to /data/op-agent/src (here a temp root),
    // then `python .../python_project_dir/test.py` on every host.
    let src_root = work.path().join("data-like/src");
    let project = work.path().join("python_project_dir");
    std::fs::create_dir_all(project.join("lib")).unwrap();
    std::fs::write(project.join("lib/__init__.py"), "").unwrap();
    std::fs::write(
        project.join("lib/greet.py"),
        "def greet():\n    return 'hello from the package'\n",
    )
    .unwrap();
    std::fs::write(
        project.join("test.py"),
        "import socket, sys, os\nsys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))\nfrom lib.greet import greet\nprint(greet())\n",
    )
    .unwrap();
    let out = ok(&agentcli(
        &m,
        &[
            "upload",
            project.to_str().unwrap(),
            src_root.to_str().unwrap(),
        ],
    ));
    assert!(out.starts_with("PACKAGENAME"), "{out}");
    assert!(out.contains("python_project_dir.tar.gz"), "{out}");
    assert!(
        std::fs::read_dir(std::env::current_dir().unwrap())
            .unwrap()
            .all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tar.gz")),
        "no archive is left in the working directory"
    );
    let summary = analysis_clean(&m).await;
    assert!(
        summary.contains("python_project_dir.tar.gz") && summary.contains(": 3/3 hosts current"),
        "{summary}"
    );
    // The seed's python_test.json, with python3 and our root.
    let task = format!(
        r#"{{"JobName":"test.py","Command":"python3 {}/python_project_dir/test.py","CronExpr":"","OnceJob":1,"Timeout":10,"SynFlag":1,"Enabled":1,"WhiteHosts":[],"BlackHosts":[]}}"#,
        src_root.display()
    );
    let task_file = write(work.path(), "python_test.json", task.as_bytes());
    ok(&agentcli(&m, &["save", task_file.to_str().unwrap()]));
    wait_until(LONG, "test.py ran on all three agents", || async {
        runs_of(&c, "test.py").await.len() == 3
    })
    .await;
    for r in runs_of(&c, "test.py").await {
        assert_eq!(r.status, RunStatus::Ok, "{r:?}");
        assert_eq!(r.output, "hello from the package\n", "{r:?}");
    }
    let listed = ok(&agentcli(&m, &["get", "packages"]));
    let mut lines = listed.lines();
    assert_eq!(
        lines
            .next()
            .unwrap()
            .split('\t')
            .map(str::trim)
            .collect::<Vec<_>>(),
        ["PACKAGENAME", "PACKAGEVERSION", "TIMESTAMP", "DEPLOYDIR"]
    );
    assert!(lines.next().unwrap().ends_with(src_root.to_str().unwrap()));
    drop(agents);
}

#[tokio::test]
async fn a_new_upload_replaces_and_rollback_restores_on_every_agent() {
    let m = Manager::start();
    let agents = fleet(&m, 3, &[]).await;
    let work = tempfile::tempdir().unwrap();
    let content = |agent: &Agent| std::fs::read_to_string(agent.deploy_dir().join("tool.sh")).ok();
    // "" = each agent's own default deploy dir.
    let f = write(work.path(), "tool.sh", b"#!/bin/sh\necho one\n");
    let v1 = version_of(&ok(&agentcli(&m, &["upload", f.to_str().unwrap(), ""])));
    analysis_clean(&m).await;
    for a in &agents {
        assert_eq!(content(a).as_deref(), Some("#!/bin/sh\necho one\n"));
    }
    let f = write(work.path(), "tool.sh", b"#!/bin/sh\necho two\n");
    let v2 = version_of(&ok(&agentcli(&m, &["upload", f.to_str().unwrap()])));
    assert!(v2 > v1);
    let summary = analysis_clean(&m).await;
    assert!(
        summary.contains(&format!("tool.sh {v2}: 3/3 hosts current")),
        "{summary}"
    );
    for a in &agents {
        assert_eq!(content(a).as_deref(), Some("#!/bin/sh\necho two\n"));
    }
    let out = ok(&agentcli(&m, &["rollback", "tool.sh"]));
    assert!(out.contains(&format!("is now {v1} (was {v2})")), "{out}");
    let summary = analysis_clean(&m).await;
    assert!(
        summary.contains(&format!("tool.sh {v1}: 3/3 hosts current")),
        "{summary}"
    );
    for a in &agents {
        assert_eq!(content(a).as_deref(), Some("#!/bin/sh\necho one\n"));
    }
    // `get nodes -o wide` shows what each host holds.
    let wide = ok(&agentcli(&m, &["get", "nodes", "-o", "wide"]));
    assert_eq!(wide.matches(&format!("tool.sh {v1}")).count(), 3, "{wide}");
}

#[tokio::test]
async fn the_download_cap_holds_with_six_agents() {
    // Every agent from the manager (no peers), so that six downloads meet the cap of two.
    let m = Manager::start_with(ManagerOptions {
        args: vec![
            "--download-concurrency".into(),
            "2".into(),
            "--peer-distribution".into(),
            "false".into(),
        ],
        ..Default::default()
    });
    let agents = fleet(&m, 6, &[]).await;
    let c = m.client();
    let work = tempfile::tempdir().unwrap();
    // Big enough that downloads overlap; not compressible, so it really moves bytes.
    let mut data = Vec::with_capacity(24 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while data.len() < 24 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    let f = write(work.path(), "big.bin", &data);
    ok(&agentcli(&m, &["upload", f.to_str().unwrap(), ""]));
    analysis_clean(&m).await;
    for a in &agents {
        assert!(
            std::fs::read(a.deploy_dir().join("big.bin")).unwrap() == data,
            "{} holds the exact content",
            a.options.node_name
        );
    }
    let metrics = c.metrics().await.unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} missing in\n{metrics}"))
    };
    let peak = value("op_manager_package_downloads_peak ");
    assert!((1.0..=2.0).contains(&peak), "peak {peak} with a cap of 2");
    assert!(value("op_manager_package_downloads_total ") >= 6.0);
    assert_eq!(value("op_manager_package_downloads_in_flight "), 0.0);
}

#[tokio::test]
async fn hostile_archives_are_refused_reported_and_the_target_is_untouched() {
    let m = Manager::start();
    // Registered before the first upload: `analysis packages` is clean for a fleet of none.
    let agent = fleet(&m, 1, &["--package-max-bytes", "1MiB"])
        .await
        .remove(0);
    let c = m.client();
    let work = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap().to_string();
    let upload = |content: Vec<u8>| {
        let f = write(work.path(), "proj.tar.gz", &content);
        version_of(&ok(&agentcli(&m, &["upload", f.to_str().unwrap(), &root])))
    };
    let good = tar_gz(&[
        member("proj/", tar::EntryType::Directory, b"", ""),
        member("proj/main.py", tar::EntryType::Regular, b"good", ""),
    ]);
    upload(good);
    analysis_clean(&m).await;
    let main_py = dir.path().join("proj/main.py");
    assert_eq!(std::fs::read_to_string(&main_py).unwrap(), "good");
    let zeros = vec![0u8; 2 << 20];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "absolute path",
            tar_gz(&[member(
                "/tmp/op-evil-abs",
                tar::EntryType::Regular,
                b"x",
                "",
            )]),
            "absolute path",
        ),
        (
            "../",
            tar_gz(&[member(
                "proj/../../op-evil",
                tar::EntryType::Regular,
                b"x",
                "",
            )]),
            "'..'",
        ),
        (
            "symlink to /etc, then a file through it",
            tar_gz(&[
                member("proj/", tar::EntryType::Directory, b"", ""),
                member("proj/etc", tar::EntryType::Symlink, b"", "/etc"),
                member("proj/etc/op-evil", tar::EntryType::Regular, b"x", ""),
            ]),
            "symlink to the absolute path \"/etc\"",
        ),
        (
            "hardlink outside",
            tar_gz(&[member(
                "proj/passwd",
                tar::EntryType::Link,
                b"",
                "../../etc/passwd",
            )]),
            "hardlink",
        ),
        (
            "device node",
            tar_gz(&[member("proj/null", tar::EntryType::Char, b"", "")]),
            "device node",
        ),
        (
            "bomb",
            tar_gz(&[member("proj/zeros", tar::EntryType::Regular, &zeros, "")]),
            "unpacks to more than 1048576 bytes",
        ),
    ];
    for (what, archive, expect) in cases {
        let v = upload(archive);
        let report = failed(&c, &agent, "proj.tar.gz", v).await;
        let err = report.error.clone().unwrap_or_default();
        assert!(
            err.starts_with("archive refused:") && err.contains(expect),
            "{what}: {err}"
        );
        assert_ne!(report.version, v, "{what}: the bad version is not in place");
        assert_eq!(std::fs::read_to_string(&main_py).unwrap(), "good", "{what}");
        assert!(!Path::new("/tmp/op-evil-abs").exists() && !Path::new("/etc/op-evil").exists());
        assert!(!dir.path().join("proj/etc").exists(), "{what}");
        let out = agentcli(&m, &["analysis", "packages"]);
        assert_eq!(out.status.code(), Some(1), "{what}: a host is behind");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("failed: archive refused"),
            "{what}"
        );
    }
}

#[tokio::test]
async fn a_corrupted_blob_is_refused_by_the_agent_and_reported() {
    let m = Manager::start();
    // Registered before the first upload: `analysis packages` is clean for a fleet of none.
    let mut agent = fleet(&m, 1, &[]).await.remove(0);
    let c = m.client();
    let work = tempfile::tempdir().unwrap();
    let f = write(work.path(), "tool.sh", b"echo good\n");
    ok(&agentcli(&m, &["upload", f.to_str().unwrap(), ""]));
    analysis_clean(&m).await;
    // With the agent away, a new version arrives and its blob rots on the manager's disk.
    agent.stop();
    let body = b"echo newer\n";
    let f = write(work.path(), "tool.sh", body);
    let v2 = version_of(&ok(&agentcli(&m, &["upload", f.to_str().unwrap()])));
    let sha = hex::encode(Sha256::digest(body));
    let blob = m.data_dir().join("blobs").join(&sha);
    let mut rotten = std::fs::read(&blob).unwrap();
    rotten[0] ^= 0xff;
    std::fs::write(&blob, &rotten).unwrap();
    agent.restart();
    let report = failed(&c, &agent, "tool.sh", v2).await;
    assert!(
        report
            .error
            .as_deref()
            .unwrap_or("")
            .starts_with("sha256 mismatch"),
        "{report:?}"
    );
    assert_eq!(
        std::fs::read_to_string(agent.deploy_dir().join("tool.sh")).unwrap(),
        "echo good\n",
        "the old version stays"
    );
    let out = agentcli(&m, &["analysis", "packages"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("failed: sha256 mismatch"));
    // The CLI refuses the damaged copy too.
    let dl = agentcli(
        &m,
        &[
            "download",
            "tool.sh",
            "-o",
            work.path().join("dl").to_str().unwrap(),
        ],
    );
    assert_eq!(dl.status.code(), Some(2));
    assert!(!work.path().join("dl").exists());
    // Uploading the content again repairs the blob; the agent catches up.
    ok(&agentcli(&m, &["upload", f.to_str().unwrap()]));
    analysis_clean(&m).await;
    assert_eq!(
        std::fs::read_to_string(agent.deploy_dir().join("tool.sh")).unwrap(),
        "echo newer\n"
    );
}

/// Every file of the visible tree carries the same version tag, and the file set is exactly that
/// version's: old or new, never a mix.
fn check_consistent(deploy: &Path, files_per_version: usize) -> Option<u32> {
    let tree = deploy.join("proj");
    if !tree.exists() {
        return None;
    }
    let mut tags = std::collections::BTreeSet::new();
    let mut count = 0;
    for e in std::fs::read_dir(&tree).unwrap() {
        let e = e.unwrap();
        let text = std::fs::read_to_string(e.path()).unwrap();
        tags.insert(text.lines().next().unwrap().to_string());
        count += 1;
    }
    assert_eq!(tags.len(), 1, "a mix of versions: {tags:?}");
    let tag: u32 = tags.into_iter().next().unwrap().parse().unwrap();
    // Version N has files f0..f(N+files_per_version): the sets differ between versions.
    assert_eq!(
        count,
        files_per_version + tag as usize,
        "version {tag} is incomplete"
    );
    Some(tag)
}

#[tokio::test]
async fn kill9_mid_deploy_leaves_the_old_or_the_new_version_never_a_mix() {
    let m = Manager::start();
    // Registered before the first upload: `analysis packages` is clean for a fleet of none.
    let mut agent = fleet(&m, 1, &[]).await.remove(0);
    let work = tempfile::tempdir().unwrap();
    let files = 400;
    let filler = vec![b'.'; 20_000];
    let archive = |tag: u32| {
        let names: Vec<String> = (0..files + tag as usize)
            .map(|i| format!("proj/f{i:04}"))
            .collect();
        let bodies: Vec<Vec<u8>> = names
            .iter()
            .map(|_| {
                let mut b = format!("{tag}\n").into_bytes();
                b.extend_from_slice(&filler);
                b
            })
            .collect();
        let mut members = vec![member("proj/", tar::EntryType::Directory, b"", "")];
        for (n, b) in names.iter().zip(&bodies) {
            members.push(member(n, tar::EntryType::Regular, b, ""));
        }
        tar_gz(&members)
    };
    let upload = |tag: u32| {
        let f = write(work.path(), "proj.tar.gz", &archive(tag));
        version_of(&ok(&agentcli(&m, &["upload", f.to_str().unwrap(), ""])))
    };
    upload(1);
    analysis_clean(&m).await;
    assert_eq!(check_consistent(&agent.deploy_dir(), files), Some(1));
    // Kill at different moments of the next deploys: right away, a little later, later still.
    let mut expect_old = 1;
    for (tag, delay_ms) in [(2u32, 0u64), (3, 30), (4, 120), (5, 400)] {
        upload(tag);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        agent.kill9();
        let seen = check_consistent(&agent.deploy_dir(), files);
        assert!(
            seen == Some(expect_old) || seen == Some(tag),
            "after kill -9: version {seen:?}, expected {expect_old} or {tag}"
        );
        agent.restart();
        analysis_clean(&m).await;
        assert_eq!(check_consistent(&agent.deploy_dir(), files), Some(tag));
        expect_old = tag;
    }
}

#[tokio::test]
async fn download_of_a_version_is_byte_identical() {
    let m = Manager::start();
    let work = tempfile::tempdir().unwrap();
    let v1_body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let f = write(work.path(), "data.bin", &v1_body);
    let v1 = version_of(&ok(&agentcli(
        &m,
        &["upload", f.to_str().unwrap(), "/opt/x"],
    )));
    let f = write(work.path(), "data.bin", b"newer");
    ok(&agentcli(&m, &["upload", f.to_str().unwrap()]));
    let dest = work.path().join("v1.bin");
    let out = ok(&agentcli(
        &m,
        &[
            "download",
            "data.bin",
            &v1.to_string(),
            "-o",
            dest.to_str().unwrap(),
        ],
    ));
    assert!(out.contains("verified"), "{out}");
    assert!(std::fs::read(&dest).unwrap() == v1_body);
    // Without a version: the current one, to ./NAME by default (the uploaded file is moved
    // away first: download never overwrites a local file without --force).
    std::fs::remove_file(work.path().join("data.bin")).unwrap();
    let out = Command::new(bin("agentcli"))
        .args(["download", "data.bin", "-o", "json"])
        .current_dir(work.path())
        .env("OP_MANAGER", &m.api_url)
        .env("OP_TOKEN", &m.admin_token)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(json["path"], "data.bin");
    assert_eq!(
        std::fs::read(work.path().join("data.bin")).unwrap(),
        b"newer"
    );
    let err = agentcli(&m, &["download", "data.bin", "12345"]);
    assert_eq!(err.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&err.stderr).contains("has no version 12345"));
}

#[tokio::test]
async fn a_once_job_saved_right_after_an_upload_finds_the_new_version() {
    let m = Manager::start();
    let _agents = fleet(&m, 1, &[]).await;
    let c = m.client();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("src");
    // Big enough (8 MiB that do not compress) that deploying takes a while after the agent
    // hears of it, while the job arrives at the same moment.
    let mut blob = vec![0u8; 8 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in blob.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let archive = tar_gz(&[
        member("proj/", tar::EntryType::Directory, b"", ""),
        member("proj/blob.bin", tar::EntryType::Regular, &blob, ""),
        member(
            "proj/run.sh",
            tar::EntryType::Regular,
            b"echo version-1\n",
            "",
        ),
    ]);
    c.upload_package_bytes("proj.tar.gz", Some(root.to_str().unwrap()), archive)
        .await
        .unwrap();
    c.save_job_text(
        "use-proj",
        &format!(
            r#"{{"JobName":"use-proj","Command":"sh {}/proj/run.sh","OnceJob":1}}"#,
            root.display()
        ),
    )
    .await
    .unwrap();
    wait_until(LONG, "use-proj ran", || async {
        runs_of(&c, "use-proj").await.len() == 1
    })
    .await;
    for r in runs_of(&c, "use-proj").await {
        assert_eq!(r.status, RunStatus::Ok, "{r:?}");
        assert_eq!(r.output, "version-1\n", "{r:?}");
    }
}
