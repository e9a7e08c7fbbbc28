//! Jobs through the API: save/get/list/delete/enable/disable with revisions, and the audit trail.

use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_get_list_delete_enable_disable_with_revisions() {
    let m = TestManager::start().await;
    let c = m.admin();
    let cycle = seed_task("cycleTest.json");
    let saved = c.save_job_text("cycleTest.py", &cycle).await.unwrap();
    assert_eq!((saved.revision, saved.created), (1, true));
    assert_eq!(saved.next_fires.len(), 3, "a cron job shows its next fires");
    assert!(saved.once.is_none());

    let job = c.get_job("cycleTest.py").await.unwrap();
    assert_eq!(job.record.revision, 1);
    assert_eq!(job.record.updated_by, "admin");
    assert_eq!(job.next_fires.len(), 3);

    let again = c.save_job_text("cycleTest.py", &cycle).await.unwrap();
    assert_eq!((again.revision, again.created), (2, false));

    let disabled = c.disable_job("cycleTest.py").await.unwrap();
    assert_eq!(
        (disabled.record.revision, disabled.record.spec.enabled),
        (3, false)
    );
    let still = c.disable_job("cycleTest.py").await.unwrap();
    assert_eq!(
        still.record.revision, 3,
        "disabling a disabled job changes nothing"
    );
    let enabled = c.enable_job("cycleTest.py").await.unwrap();
    assert_eq!(
        (enabled.record.revision, enabled.record.spec.enabled),
        (4, true)
    );

    save(
        &c,
        json!({"JobName": "apiTest.py", "Command": "echo {host}"}),
    )
    .await;
    let names: Vec<_> = c
        .list_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.record.spec.name)
        .collect();
    assert_eq!(names, ["apiTest.py", "cycleTest.py"]);

    c.delete_job("cycleTest.py").await.unwrap();
    let err = c.get_job("cycleTest.py").await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(404), Some("not_found")));
    let err = c.delete_job("cycleTest.py").await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert_eq!(c.list_jobs().await.unwrap().len(), 1);

    // Saved again after delete: the revision continues, so agents never confuse the two.
    let back = c.save_job_text("cycleTest.py", &cycle).await.unwrap();
    assert_eq!((back.revision, back.created), (5, true));

    let audit = c.audit(None, None).await.unwrap();
    let actions: Vec<_> = audit
        .iter()
        .filter(|a| a.target == "cycleTest.py")
        .map(|a| a.action.as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "job.save",
            "job.save",
            "job.disable",
            "job.enable",
            "job.delete",
            "job.save"
        ]
    );
    assert!(audit.iter().all(|a| !a.actor.is_empty()));
    m.stop().await;
}
