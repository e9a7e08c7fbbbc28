//! Packages over the API: upload, list, versions, content with Range, the download cap, rollback,
//! guarded deletes with blob GC, the desired state agents receive, and who may do what.

use std::time::Duration;

use op_client::{Client, ClientError};
use op_proto::api::{CreateTokenRequest, Scope};
use op_proto::package::{InstalledPackage, PackageState};
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};

use crate::common::*;

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

async fn download_all(client: &Client, name: &str, version: u64, offset: u64) -> (u64, Vec<u8>) {
    let mut content = client.package_content(name, version, offset).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = content.next_chunk().await.unwrap() {
        out.extend_from_slice(&chunk);
    }
    (content.start, out)
}

async fn token(admin: &Client, m: &TestManager, name: &str, scope: Scope) -> Client {
    let created = admin
        .create_token(&CreateTokenRequest {
            name: name.into(),
            scope,
            expires_in_secs: None,
        })
        .await
        .unwrap();
    m.client(&created.secret)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_list_download_with_ranges() {
    let m = TestManager::start().await;
    let admin = m.admin();
    let v1_body = b"print('v1')\n".to_vec();
    let v1 = admin
        .upload_package_bytes("test.py", Some("/data/op-agent/src/"), v1_body.clone())
        .await
        .unwrap();
    assert_eq!(
        (
            v1.name.as_str(),
            v1.size,
            v1.sha256.clone(),
            v1.deploy_dir.as_str(),
            v1.current,
            v1.uploader.as_str()
        ),
        (
            "test.py",
            v1_body.len() as u64,
            sha(&v1_body),
            "/data/op-agent/src",
            true,
            "admin"
        )
    );
    let now = chrono::Utc::now().timestamp() as u64;
    assert!(v1.version.abs_diff(now) < 60, "version is unix seconds");
    assert!(m.dir.path().join("blobs").join(&v1.sha256).is_file());

    // A second upload without a deploy dir inherits the last one and becomes current.
    let v2_body: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let v2 = admin
        .upload_package(
            "test.py",
            None,
            None,
            futures_util::stream::iter(
                v2_body
                    .chunks(70_000)
                    .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
                    .collect::<Vec<_>>(),
            ),
        )
        .await
        .unwrap();
    assert!(v2.version > v1.version);
    assert_eq!(
        (v2.deploy_dir.as_str(), v2.current),
        ("/data/op-agent/src", true)
    );
    let list = admin.list_packages().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].version, list[0].current), (v2.version, true));
    let versions = admin.package_versions("test.py").await.unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.version, v.current))
            .collect::<Vec<_>>(),
        [(v1.version, false), (v2.version, true)]
    );
    assert_eq!(
        admin
            .package_version("test.py", v1.version)
            .await
            .unwrap()
            .sha256,
        v1.sha256
    );

    // Byte-identical content, whole and resumed from an offset.
    let (start, all) = download_all(&admin, "test.py", v2.version, 0).await;
    assert_eq!((start, all == v2_body), (0, true));
    let (start, tail) = download_all(&admin, "test.py", v2.version, 500_000).await;
    assert_eq!(start, 500_000);
    assert_eq!(tail, v2_body[500_000..]);
    let content = admin
        .package_content("test.py", v1.version, 0)
        .await
        .unwrap();
    assert_eq!(content.sha256.as_deref(), Some(v1.sha256.as_str()));

    // Explicit ranges and an unsatisfiable one.
    let path = format!("/v1/packages/test.py/{}/content", v2.version);
    let resp = admin
        .request(Method::GET, &path)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes 10-19/{}", v2_body.len()).as_str()
    );
    assert_eq!(resp.bytes().await.unwrap(), v2_body[10..20]);
    let resp = admin
        .request(Method::GET, &path)
        .header("range", "bytes=900000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes */{}", v2_body.len()).as_str()
    );

    let err = admin.package_content("test.py", 7, 0).await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    let err = admin.package_versions("nope").await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_refused_and_change_nothing() {
    let m = TestManager::start_with(|a| a.upload_max_bytes = Some("4KiB".into())).await;
    let admin = m.admin();
    // Declared too large: refused before the body is read.
    let err = admin
        .upload_package_bytes("big.bin", None, vec![0u8; 5000])
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(413), "{err}");
    // Not declared (streamed): refused while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..5).map(|_| Ok(vec![1u8; 1000])).collect();
    let err = admin
        .upload_package("big.bin", None, None, futures_util::stream::iter(chunks))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(413), "{err}");
    for (name, dir, code) in [
        (".hidden", None, "invalid_name"),
        ("a b", None, "invalid_name"),
        // A name starting with '-' would be read as an option by shell commands using it.
        ("-rf", None, "invalid_name"),
        ("ok.sh", Some("relative/dir"), "invalid_deploy_dir"),
        ("ok.sh", Some("/data/../etc"), "invalid_deploy_dir"),
    ] {
        let err = admin
            .upload_package_bytes(name, dir, b"x".to_vec())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(code), "{name} {dir:?}: {err}");
    }
    assert!(admin.list_packages().await.unwrap().is_empty());
    let mut blobs: Vec<_> = std::fs::read_dir(m.dir.path().join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    blobs.sort();
    // Only the staging dirs for uploads (tmp) and for copies pushed by peers (incoming).
    assert_eq!(
        blobs,
        ["incoming", "tmp"],
        "no blob and no temp file is left behind"
    );
    for sub in ["blobs/tmp", "blobs/incoming"] {
        assert_eq!(
            std::fs::read_dir(m.dir.path().join(sub)).unwrap().count(),
            0,
            "{sub} is empty"
        );
    }
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_delete_and_blob_gc() {
    let m = TestManager::start().await;
    let admin = m.admin();
    let v1 = admin
        .upload_package_bytes("tool.sh", None, b"echo one\n".to_vec())
        .await
        .unwrap();
    let v2 = admin
        .upload_package_bytes("tool.sh", None, b"echo two\n".to_vec())
        .await
        .unwrap();
    // The same content under another name shares one blob.
    admin
        .upload_package_bytes("copy.sh", None, b"echo one\n".to_vec())
        .await
        .unwrap();
    let back = admin.rollback_package("tool.sh", None).await.unwrap();
    assert_eq!((back.version, back.current), (v1.version, true));
    let err = admin.rollback_package("tool.sh", None).await.unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    let err = admin
        .rollback_package("tool.sh", Some(42))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    // An empty body is the previous version too (curl -X POST without data).
    let resp = admin
        .request(Method::POST, "/v1/packages/tool.sh/rollback")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let fwd = admin
        .rollback_package("tool.sh", Some(v2.version))
        .await
        .unwrap();
    assert_eq!(fwd.version, v2.version);

    let err = admin
        .delete_package_version("tool.sh", v2.version)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "the current version stays: {err}");
    admin
        .delete_package_version("tool.sh", v1.version)
        .await
        .unwrap();
    let blobs = m.dir.path().join("blobs");
    // v1's blob is still used by copy.sh.
    assert!(blobs.join(&v1.sha256).is_file());
    let copy = admin.list_packages().await.unwrap();
    let copy = copy.iter().find(|p| p.name == "copy.sh").unwrap();
    admin
        .upload_package_bytes("copy.sh", None, b"echo three\n".to_vec())
        .await
        .unwrap();
    admin
        .delete_package_version("copy.sh", copy.version)
        .await
        .unwrap();
    // Nothing refers to it any more: GC deletes it soon after the delete, not at its next tick.
    wait_until("the unreferenced blob is deleted", DEADLINE, || async {
        (!blobs.join(&v1.sha256).exists()).then_some(())
    })
    .await;
    assert!(blobs.join(&v2.sha256).is_file());
    let actions: Vec<String> = admin
        .audit(None, Some(100))
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.action.starts_with("package."))
        .map(|a| format!("{} {}", a.action, a.target))
        .collect();
    assert_eq!(
        actions,
        [
            "package.upload tool.sh",
            "package.upload tool.sh",
            "package.upload copy.sh",
            "package.rollback tool.sh",
            "package.rollback tool.sh",
            "package.delete tool.sh",
            "package.upload copy.sh",
            "package.delete copy.sh",
        ]
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_get_current_versions_and_report_what_they_hold() {
    let m = TestManager::start().await;
    let (admin, agent) = (m.admin(), m.agent());
    let a = FakeAgent::new(2);
    a.register(&agent).await;
    let before = a.sync(&agent, 0, 0).await;
    assert!(before.packages.is_empty());
    let v1 = admin
        .upload_package_bytes("test.py", Some(""), b"1".to_vec())
        .await
        .unwrap();
    // The upload wakes a parked sync and hands over the new package.
    let state = a.sync(&agent, before.index, 5).await;
    assert_eq!(state.packages, [v1.to_ref()]);
    let v2 = admin
        .upload_package_bytes("test.py", None, b"2".to_vec())
        .await
        .unwrap();
    let state = a.sync(&agent, state.index, 5).await;
    assert_eq!(state.packages, [v2.to_ref()]);
    admin.rollback_package("test.py", None).await.unwrap();
    let state = a.sync(&agent, state.index, 5).await;
    assert_eq!(state.packages, [v1.to_ref()]);

    // What the agent reports is stored on its node and blocks deleting that version.
    let mut hb = a.heartbeat();
    hb.packages = vec![InstalledPackage {
        name: "test.py".into(),
        version: v2.version,
        sha256: v2.sha256.clone(),
        state: PackageState::Downloading,
        target_version: Some(v1.version),
        error: None,
        fetched: None,
    }];
    a.client(&agent).sync(state.index, 0, &hb).await.unwrap();
    let node = admin.get_node(&a.hostname).await.unwrap();
    assert_eq!(node.packages, hb.packages);
    // Refused before the heartbeat is flushed to the store (from the buffer) and after (by the
    // store, which names the host).
    wait_until(
        "the store refuses with the host's name",
        DEADLINE,
        || async {
            let err = admin
                .delete_package_version("test.py", v2.version)
                .await
                .unwrap_err();
            assert_eq!(err.status(), Some(409), "{err}");
            err.to_string().contains("node-2").then_some(())
        },
    )
    .await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_beyond_the_cap_get_429_with_retry_after() {
    let m = TestManager::start_with(|a| a.download_concurrency = Some(1)).await;
    let admin = m.admin();
    // Large enough that an unread response cannot finish into socket buffers.
    let body = vec![7u8; 32 << 20];
    let v = admin
        .upload_package_bytes("big.bin", None, body.clone())
        .await
        .unwrap();
    let held = admin
        .package_content("big.bin", v.version, 0)
        .await
        .unwrap();
    let err = admin
        .package_content("big.bin", v.version, 0)
        .await
        .unwrap_err();
    match &err {
        ClientError::Busy { retry_after, body } => {
            assert_eq!(*retry_after, Some(Duration::from_secs(1)));
            assert_eq!(body.code, "too_many_requests");
        }
        other => panic!("expected 429, got {other:?}"),
    }
    let metrics = admin.metrics().await.unwrap();
    assert!(
        metrics.contains("op_manager_package_downloads_in_flight 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("op_manager_package_downloads_peak 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("op_manager_package_downloads_refused_total 1"),
        "{metrics}"
    );
    // A dropped download frees its slot at once.
    drop(held);
    let (_, all) = wait_until("a slot is free again", DEADLINE, || async {
        match admin.package_content("big.bin", v.version, 0).await {
            Ok(mut c) => {
                let mut out = Vec::new();
                while let Some(chunk) = c.next_chunk().await.unwrap() {
                    out.extend_from_slice(&chunk);
                }
                Some((c.start, out))
            }
            Err(ClientError::Busy { .. }) => None,
            Err(e) => panic!("{e}"),
        }
    })
    .await;
    assert!(all == body);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_decide_who_may_upload_read_and_download() {
    let m = TestManager::start().await;
    let admin = m.admin();
    let v = admin
        .upload_package_bytes("test.py", None, b"x".to_vec())
        .await
        .unwrap();
    let viewer = token(&admin, &m, "v", Scope::Viewer).await;
    let operator = token(&admin, &m, "o", Scope::Operator).await;
    let agent = m.agent();
    // Viewers read and download, never write.
    viewer.list_packages().await.unwrap();
    download_all(&viewer, "test.py", v.version, 0).await;
    let err = viewer
        .upload_package_bytes("test.py", None, b"y".to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    let err = viewer.rollback_package("test.py", None).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    // Agents download content, and nothing else of the package API.
    let (_, got) = download_all(&agent, "test.py", v.version, 0).await;
    assert_eq!(got, b"x");
    let err = agent.list_packages().await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    let err = agent
        .upload_package_bytes("test.py", None, b"y".to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    // Operators manage packages.
    let v2 = operator
        .upload_package_bytes("test.py", None, b"y".to_vec())
        .await
        .unwrap();
    assert_eq!(v2.uploader, "o");
    operator.rollback_package("test.py", None).await.unwrap();
    let anonymous = Client::new(&m.url, None).unwrap();
    let err = anonymous
        .package_content("test.py", v.version, 0)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    m.stop().await;
}
