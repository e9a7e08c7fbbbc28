//! SIGHUP (logrotate sends it) is survived by both daemons in every mode, and logged.

use op_testkit::{Agent, AgentOptions, Manager, Signal, wait_until};

use crate::support::LONG;

/// A manager and an agent without TLS get SIGHUP twice: both keep serving and log it. Without a
/// handler, SIGHUP's default action ended them (exit 129).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_is_survived_by_manager_and_agent_without_tls() {
    let mut m = Manager::start();
    let mut a = Agent::start(AgentOptions::new("hup-1", "127.0.0.2").manager(&m));
    for _ in 0..2 {
        m.signal(Signal::SIGHUP);
        a.signal(Signal::SIGHUP);
    }
    wait_until(LONG, "both daemons log the SIGHUP", || async {
        m.log().contains("SIGHUP received") && a.log().contains("SIGHUP received")
    })
    .await;
    // Still running, and still answering.
    assert_eq!(m.exited(), None, "the manager ended on SIGHUP");
    assert_eq!(a.exited(), None, "the agent ended on SIGHUP");
    m.client().list_nodes().await.expect("the manager answers");
    let status = reqwest::get(format!("{}/healthz", a.url()))
        .await
        .expect("the agent answers")
        .status();
    assert!(status.is_success(), "{status}");
}
