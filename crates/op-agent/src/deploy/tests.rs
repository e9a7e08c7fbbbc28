//! The deployer against real directories, with package content served from memory (the network
//! is the one thing replaced here; op-testkit covers it with real managers and agents).

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::archive::tests::{gz, raw, tar_of};
use super::*;

/// How the memory source misbehaves.
#[derive(Clone, Default)]
struct Faults {
    /// Answer 429 this many times first.
    busy: usize,
    /// Cut the first body after this many bytes.
    cut_after: Option<usize>,
    /// Never send the body of this version.
    hang: Option<u64>,
}

#[derive(Default)]
struct MemSource {
    content: Mutex<HashMap<(String, u64), Vec<u8>>>,
    faults: Mutex<Faults>,
    opens: Mutex<Vec<(u64, u64)>>,
    busy_answers: AtomicUsize,
}

impl Source for MemSource {
    fn open<'a>(
        &'a self,
        pkg: &'a PackageRef,
        offset: u64,
    ) -> BoxFuture<'a, Result<Opened, FetchError>> {
        Box::pin(async move {
            let mut faults = self.faults.lock().unwrap();
            if faults.busy > 0 {
                faults.busy -= 1;
                self.busy_answers.fetch_add(1, Ordering::SeqCst);
                return Err(FetchError::Busy(Some(Duration::ZERO)));
            }
            self.opens.lock().unwrap().push((pkg.version, offset));
            if faults.hang == Some(pkg.version) {
                return Ok(Opened {
                    start: offset,
                    body: futures_util::stream::pending().boxed(),
                });
            }
            let Some(data) = self
                .content
                .lock()
                .unwrap()
                .get(&(pkg.name.clone(), pkg.version))
                .cloned()
            else {
                return Err(FetchError::Failed("404 not found".into()));
            };
            let rest = data[offset as usize..].to_vec();
            let chunks: Vec<Result<Bytes, String>> = match faults.cut_after.take() {
                Some(n) => vec![
                    Ok(Bytes::from(rest[..n].to_vec())),
                    Err("connection reset".to_string()),
                ],
                None => rest
                    .chunks(4096)
                    .map(|c| Ok(Bytes::from(c.to_vec())))
                    .collect(),
            };
            Ok(Opened {
                start: offset,
                body: futures_util::stream::iter(chunks).boxed(),
            })
        })
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    source: Arc<MemSource>,
    deployer: Deployer,
    shutdown: CancellationToken,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with(|_| {})
    }

    fn with(tune: impl FnOnce(&mut DeploySettings)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let source = Arc::new(MemSource::default());
        let mut settings = DeploySettings::new(dir.path().join("deploy"));
        settings.retry_min = Duration::from_millis(50);
        settings.retry_max = Duration::from_millis(200);
        tune(&mut settings);
        let shutdown = CancellationToken::new();
        let deployer = Deployer::new(settings, source.clone(), shutdown.clone());
        Fixture {
            dir,
            source,
            deployer,
            shutdown,
        }
    }

    fn deploy_dir(&self) -> PathBuf {
        self.dir.path().join("deploy")
    }

    /// Serves `data` as `name` `version` and returns its ref.
    fn publish(&self, name: &str, version: u64, data: &[u8]) -> PackageRef {
        self.source
            .content
            .lock()
            .unwrap()
            .insert((name.to_string(), version), data.to_vec());
        PackageRef {
            name: name.into(),
            version,
            sha256: hex::encode(Sha256::digest(data)),
            size: data.len() as u64,
            deploy_dir: String::new(),
        }
    }

    async fn until(&self, what: &str, check: impl Fn(&[InstalledPackage]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut rx = self.deployer.subscribe();
        loop {
            let report = self.deployer.report();
            if check(&report) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; report: {report:?}"
            );
            let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
        }
    }

    async fn installed(&self, name: &str, version: u64) {
        self.until(&format!("{name} {version} installed"), |r| {
            r.iter().any(|p| {
                p.name == name && p.version == version && p.state == PackageState::Installed
            })
        })
        .await;
    }

    async fn failed(&self, name: &str) -> InstalledPackage {
        self.until(&format!("{name} failed"), |r| {
            r.iter()
                .any(|p| p.name == name && p.state == PackageState::Failed)
        })
        .await;
        self.deployer
            .report()
            .into_iter()
            .find(|p| p.name == name)
            .unwrap()
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.deploy_dir().join(rel)).unwrap()
    }

    fn versions_kept(&self, name: &str) -> Vec<u64> {
        let mut v: Vec<u64> = std::fs::read_dir(layout::pkg_dir(&self.deploy_dir(), name))
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
            .collect();
        v.sort();
        v
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.deployer.wait())
            .await
            .expect("workers stop");
    }
}

fn project(files: &[(&'static str, &'static str)]) -> Vec<u8> {
    let mut members = vec![raw("proj/", tar::EntryType::Directory)];
    for (name, data) in files {
        let mut m = raw(name, tar::EntryType::Regular);
        m.data = data.as_bytes();
        members.push(m);
    }
    gz(&tar_of(&members))
}

#[tokio::test]
async fn a_file_lands_as_deploydir_name_0755_and_new_versions_replace_it() {
    let f = Fixture::new();
    let v1 = f.publish("test.py", 1, b"print('one')\n");
    f.deployer.set_desired(std::slice::from_ref(&v1));
    f.installed("test.py", 1).await;
    let path = f.deploy_dir().join("test.py");
    assert_eq!(f.read("test.py"), "print('one')\n");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755);
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let report = f.deployer.report();
    assert_eq!(report[0].sha256, v1.sha256);
    assert_eq!(
        (report[0].target_version, report[0].error.clone()),
        (None, None)
    );

    let v2 = f.publish("test.py", 2, b"print('two')\n");
    f.deployer.set_desired(&[v2]);
    f.installed("test.py", 2).await;
    assert_eq!(f.read("test.py"), "print('two')\n");
    // Rollback to a kept version switches without downloading.
    let opens = f.source.opens.lock().unwrap().len();
    f.deployer.set_desired(&[v1]);
    f.installed("test.py", 1).await;
    assert_eq!(f.read("test.py"), "print('one')\n");
    assert_eq!(
        f.source.opens.lock().unwrap().len(),
        opens,
        "no download for a kept version"
    );
    f.stop().await;
}

#[tokio::test]
async fn archives_switch_whole_trees_never_overlaid() {
    let f = Fixture::new();
    let v1 = f.publish(
        "proj.tar.gz",
        1,
        &project(&[("proj/main.py", "v1"), ("proj/old.py", "only in v1")]),
    );
    f.deployer.set_desired(&[v1]);
    f.installed("proj.tar.gz", 1).await;
    assert_eq!(f.read("proj/main.py"), "v1");
    assert_eq!(f.read("proj/old.py"), "only in v1");
    let v2 = f.publish("proj.tar.gz", 2, &project(&[("proj/main.py", "v2")]));
    f.deployer.set_desired(&[v2]);
    f.installed("proj.tar.gz", 2).await;
    assert_eq!(f.read("proj/main.py"), "v2");
    assert!(
        !f.deploy_dir().join("proj/old.py").exists(),
        "a file of the old tree does not survive into the new one"
    );
    // An archive without a single top directory is visible under its name's stem.
    let mut a = raw("a.txt", tar::EntryType::Regular);
    a.data = b"a";
    let mut b = raw("b.txt", tar::EntryType::Regular);
    b.data = b"b";
    let flat = f.publish("tools.tar.gz", 7, &gz(&tar_of(&[a, b])));
    f.deployer.set_desired(&[
        f.publish("proj.tar.gz", 2, &project(&[("proj/main.py", "v2")])),
        flat,
    ]);
    f.installed("tools.tar.gz", 7).await;
    assert_eq!(f.read("tools/b.txt"), "b");
    f.stop().await;
}

#[tokio::test]
async fn a_checksum_mismatch_is_refused_reported_and_leaves_the_old_version() {
    let f = Fixture::new();
    let v1 = f.publish("tool.sh", 1, b"echo good\n");
    f.deployer.set_desired(&[v1]);
    f.installed("tool.sh", 1).await;
    let mut v2 = f.publish("tool.sh", 2, b"echo evil\n");
    v2.sha256 = hex::encode(Sha256::digest(b"what the manager stored"));
    f.deployer.set_desired(&[v2]);
    let report = f.failed("tool.sh").await;
    assert_eq!((report.version, report.target_version), (1, Some(2)));
    assert!(
        report
            .error
            .as_deref()
            .unwrap()
            .starts_with("sha256 mismatch"),
        "{report:?}"
    );
    assert_eq!(f.read("tool.sh"), "echo good\n");
    assert_eq!(f.versions_kept("tool.sh"), [1]);
    // Retried with backoff: the content is fetched again, not trusted from a bad part file.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while f
        .source
        .opens
        .lock()
        .unwrap()
        .iter()
        .filter(|o| o.0 == 2)
        .count()
        < 2
    {
        assert!(tokio::time::Instant::now() < deadline, "no retry");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f.stop().await;
}

#[tokio::test]
async fn an_evil_archive_is_refused_and_the_target_is_untouched() {
    let f = Fixture::new();
    let v1 = f.publish("proj.tar.gz", 1, &project(&[("proj/main.py", "good")]));
    f.deployer.set_desired(&[v1]);
    f.installed("proj.tar.gz", 1).await;
    let mut link = raw("proj/etc", tar::EntryType::Symlink);
    link.link = b"/etc";
    let mut through = raw("proj/etc/cron.d/evil", tar::EntryType::Regular);
    through.data = b"* * * * * root rm -rf /\n";
    let v2 = f.publish(
        "proj.tar.gz",
        2,
        &gz(&tar_of(&[
            raw("proj/", tar::EntryType::Directory),
            link,
            through,
        ])),
    );
    f.deployer.set_desired(&[v2]);
    let report = f.failed("proj.tar.gz").await;
    let err = report.error.unwrap();
    assert!(
        err.starts_with("archive refused:") && err.contains("/etc"),
        "{err}"
    );
    assert_eq!(f.read("proj/main.py"), "good");
    assert!(!f.deploy_dir().join("proj/etc").exists());
    assert_eq!(f.versions_kept("proj.tar.gz"), [1]);
    let leftovers: Vec<String> = std::fs::read_dir(layout::pkg_dir(&f.deploy_dir(), "proj.tar.gz"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".staging"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    f.stop().await;
}

#[tokio::test]
async fn interrupted_downloads_resume_and_busy_managers_are_waited_out() {
    let f = Fixture::new();
    let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let v = f.publish("big.bin", 3, &data);
    *f.source.faults.lock().unwrap() = Faults {
        busy: 2,
        cut_after: Some(150_000),
        hang: None,
    };
    f.deployer.set_desired(&[v]);
    f.installed("big.bin", 3).await;
    assert_eq!(
        *f.source.opens.lock().unwrap(),
        [(3, 0), (3, 150_000)],
        "the second attempt resumed where the first stopped"
    );
    assert_eq!(f.source.busy_answers.load(Ordering::SeqCst), 2);
    assert_eq!(std::fs::read(f.deploy_dir().join("big.bin")).unwrap(), data);
    f.stop().await;
}

#[tokio::test]
async fn a_stuck_version_never_blocks_a_newer_one_or_other_packages() {
    let f = Fixture::new();
    let stuck = f.publish("a.sh", 1, b"1");
    f.source.faults.lock().unwrap().hang = Some(1);
    let other = f.publish("b.sh", 5, b"b");
    f.deployer.set_desired(&[stuck, other]);
    f.installed("b.sh", 5).await;
    f.until("a.sh downloading", |r| {
        r.iter()
            .any(|p| p.name == "a.sh" && p.state == PackageState::Downloading)
    })
    .await;
    let newer = f.publish("a.sh", 2, b"2");
    f.deployer.set_desired(&[newer, f.publish("b.sh", 5, b"b")]);
    f.installed("a.sh", 2).await;
    assert_eq!(f.read("a.sh"), "2");
    // A package that leaves the desired state is no longer reported (its files stay).
    f.deployer.set_desired(&[f.publish("b.sh", 5, b"b")]);
    f.until("a.sh gone from the report", |r| {
        r.iter().all(|p| p.name != "a.sh")
    })
    .await;
    assert_eq!(f.read("a.sh"), "2");
    f.stop().await;
}

#[tokio::test]
async fn only_the_newest_versions_are_kept() {
    let f = Fixture::with(|s| s.keep = 2);
    for v in 1..=5 {
        let r = f.publish("k.sh", v, format!("{v}").as_bytes());
        f.deployer.set_desired(&[r]);
        f.installed("k.sh", v).await;
    }
    assert_eq!(f.versions_kept("k.sh"), [3, 4, 5]);
    f.stop().await;
}

#[tokio::test]
async fn leftovers_of_a_killed_deploy_are_cleaned_and_the_view_stays_consistent() {
    let f = Fixture::new();
    let v1 = f.publish("proj.tar.gz", 1, &project(&[("proj/main.py", "v1")]));
    f.deployer.set_desired(&[v1]);
    f.installed("proj.tar.gz", 1).await;
    f.shutdown.cancel();
    f.deployer.wait().await;
    // What a kill -9 at each point of the next deploy leaves: a partial download, a half
    // unpacked staging tree, a temp symlink not yet renamed. The visible tree is still v1.
    let pkg = layout::pkg_dir(&f.deploy_dir(), "proj.tar.gz");
    let v2_data = project(&[("proj/main.py", "v2")]);
    std::fs::write(layout::part_path(&pkg, 2), &v2_data[..10]).unwrap();
    std::fs::create_dir_all(pkg.join(".staging-2-abc/tree/proj")).unwrap();
    std::fs::write(pkg.join(".staging-2-abc/tree/proj/main.py"), "half").unwrap();
    std::os::unix::fs::symlink(
        ".op-packages/proj.tar.gz/2/tree/proj",
        pkg.join(".link-abc"),
    )
    .unwrap();
    assert_eq!(f.read("proj/main.py"), "v1");
    assert_eq!(
        layout::installed(&f.deploy_dir(), "proj.tar.gz").map(|m| m.version),
        Some(1)
    );

    // A restarted agent finishes the job from where the download stopped.
    let shutdown = CancellationToken::new();
    let deployer = Deployer::new(
        DeploySettings::new(f.deploy_dir()),
        f.source.clone(),
        shutdown.clone(),
    );
    let v2 = f.publish("proj.tar.gz", 2, &v2_data);
    f.source.opens.lock().unwrap().clear();
    deployer.set_desired(&[v2]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !deployer
        .report()
        .iter()
        .any(|p| p.version == 2 && p.state == PackageState::Installed)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            deployer.report()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*f.source.opens.lock().unwrap(), [(2, 10)]);
    assert_eq!(f.read("proj/main.py"), "v2");
    let names: Vec<String> = std::fs::read_dir(&pkg)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.') && n != ".lock" || n.ends_with(".part"))
        .collect();
    assert!(names.is_empty(), "leftovers: {names:?}");
    shutdown.cancel();
    deployer.wait().await;
}

#[tokio::test]
async fn two_agents_sharing_a_deploy_dir_take_turns() {
    let f = Fixture::new();
    let second = Deployer::new(
        DeploySettings::new(f.deploy_dir()),
        f.source.clone(),
        f.shutdown.clone(),
    );
    let v = f.publish("shared.py", 9, &vec![b'x'; 300_000]);
    f.deployer.set_desired(std::slice::from_ref(&v));
    second.set_desired(&[v]);
    f.installed("shared.py", 9).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !second
        .report()
        .iter()
        .any(|p| p.version == 9 && p.state == PackageState::Installed)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            second.report()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(f.source.opens.lock().unwrap().len(), 1, "downloaded once");
    assert_eq!(f.read("shared.py").len(), 300_000);
    f.shutdown.cancel();
    second.wait().await;
    f.stop().await;
}

#[tokio::test]
async fn an_unmanaged_file_in_the_way_is_moved_aside_not_overwritten() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.deploy_dir()).unwrap();
    std::fs::write(f.deploy_dir().join("test.py"), "the seed's copy").unwrap();
    let v = f.publish("test.py", 1, b"managed");
    f.deployer.set_desired(&[v]);
    f.installed("test.py", 1).await;
    assert_eq!(f.read("test.py"), "managed");
    let pkg = layout::pkg_dir(&f.deploy_dir(), "test.py");
    let aside: Vec<_> = std::fs::read_dir(&pkg)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("replaced-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(
        std::fs::read_to_string(&aside[0]).unwrap(),
        "the seed's copy"
    );
    f.stop().await;
}
