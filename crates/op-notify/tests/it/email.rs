//! The email channel against a real SMTP server (Python's aiosmtpd, Debian's
//! `python3-aiosmtpd`): the message as received, and STARTTLS with a certificate from op-tls,
//! the server requiring TLS and a login whose password the channel reads from a file.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use op_notify::{Channel, DeliveryError};
use op_proto::events::SmtpTls;
use op_testkit::wait_until;

use crate::support::{Child, LONG, failed_event, free_port, rule, sender};

/// A python3 that has aiosmtpd. Debian's package installs it for the system python3, which
/// may not be the first python3 on PATH; a missing one fails the test with what to install.
fn python() -> &'static str {
    for bin in ["python3", "/usr/bin/python3"] {
        let found = Command::new(bin)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return bin;
        }
    }
    panic!("aiosmtpd is missing: apt-get install python3-aiosmtpd (.ci/run installs it)");
}

/// A real SMTP server on 127.0.0.1 writing what it receives into `out`; `tls` is
/// (certificate, key, user, password) to require STARTTLS and a login.
fn start(out: &Path, tls: Option<(&Path, &Path, &str, &str)>) -> (Child, String) {
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/smtp_sink.py");
    let mut cmd = Command::new(python());
    cmd.arg(script).arg(port.to_string()).arg(out);
    if let Some((cert, key, user, password)) = tls {
        cmd.arg(cert).arg(key).arg(user).arg(password);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the SMTP server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the SMTP server did not start");
    (Child(child), format!("127.0.0.1:{port}"))
}

/// The first message received: (raw message, metadata JSON).
async fn first_message(out: &Path) -> (String, serde_json::Value) {
    let eml = out.join("1.eml");
    wait_until(LONG, "the SMTP server has the message", || async {
        eml.exists()
    })
    .await;
    let meta = std::fs::read_to_string(out.join("1.json")).unwrap();
    (
        std::fs::read_to_string(eml).unwrap(),
        serde_json::from_str(&meta).unwrap(),
    )
}

/// A header's value (unfolded) from a raw message.
fn header<'a>(message: &'a str, name: &str) -> &'a str {
    let head = message.split("\r\n\r\n").next().unwrap();
    head.split("\r\n")
        .find_map(|l| {
            l.split_once(':')
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim())
        })
        .unwrap_or_else(|| panic!("no {name} header in:\n{head}"))
}

fn email(
    smtp: String,
    tls: SmtpTls,
    login: Option<(&str, PathBuf)>,
    ca: Option<PathBuf>,
) -> Channel {
    let (user, password_file) = match login {
        Some((u, p)) => (Some(u.to_string()), Some(p)),
        None => (None, None),
    };
    Channel::Email {
        to: vec!["ops@example.com".into(), "oncall@example.com".into()],
        smtp,
        from: Some("op-agent@example.com".into()),
        user,
        password_file,
        tls,
        ca_file: ca,
    }
}

#[tokio::test]
async fn the_message_names_the_hosts_and_carries_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (_smtp, addr) = start(dir.path(), None);
    let rule = rule("mail", email(addr, SmtpTls::Opportunistic, None, None));
    let event = failed_event(41);
    let receipt = sender().deliver(&rule, &event, "op-41-mail").await.unwrap();
    assert_eq!(receipt.status, 250, "{receipt:?}");
    assert!(receipt.body.contains("accepted"), "{receipt:?}");

    let (message, meta) = first_message(dir.path()).await;
    assert_eq!(
        meta["rcpt_tos"],
        serde_json::json!(["ops@example.com", "oncall@example.com"])
    );
    assert_eq!(meta["tls"], false, "the server offers no STARTTLS");
    assert_eq!(
        header(&message, "To"),
        "ops@example.com, oncall@example.com"
    );
    assert_eq!(header(&message, "From"), "op-agent@example.com");
    assert_eq!(header(&message, "Subject"), event.summary);
    assert_eq!(header(&message, "Message-ID"), "<op-41-mail@op-agent>");
    assert_eq!(header(&message, "X-Op-Idempotency-Key"), "op-41-mail");
    let body = message.split_once("\r\n\r\n").unwrap().1;
    for host in &event.hosts {
        assert!(
            body.contains(&format!("  {host}\r\n")),
            "{host} in:\n{body}"
        );
    }
    assert!(body.contains(&event.url), "{body}");
}

#[tokio::test]
async fn required_tls_is_never_sent_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let (_smtp, addr) = start(dir.path(), None);
    let rule = rule("mail", email(addr.clone(), SmtpTls::Required, None, None));
    let err = sender()
        .deliver(&rule, &failed_event(1), "k")
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Unreachable { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "email to ops@example.com, oncall@example.com via {addr}"
        )),
        "{text}"
    );
    assert!(!dir.path().join("1.eml").exists(), "nothing was delivered");
}

#[tokio::test]
async fn starttls_with_a_login_whose_password_is_read_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("tls");
    op_tls::certs::init(
        &certs,
        &op_tls::certs::InitRequest {
            days: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let out = dir.path().join("mail");
    std::fs::create_dir(&out).unwrap();
    let (_smtp, addr) = start(
        &out,
        Some((
            &certs.join("server.pem"),
            &certs.join("server.key"),
            "op",
            "s3cret",
        )),
    );
    // The certificate is for 127.0.0.1 and localhost; trust its CA.
    let password = dir.path().join("smtp.pass");
    std::fs::write(&password, "s3cret\n").unwrap();
    let rule = rule(
        "mail",
        email(
            addr.clone(),
            SmtpTls::Required,
            Some(("op", password.clone())),
            Some(certs.join("ca.pem")),
        ),
    );
    let receipt = sender()
        .deliver(&rule, &failed_event(5), "op-5-mail")
        .await
        .unwrap();
    assert_eq!(receipt.status, 250, "{receipt:?}");
    let (message, meta) = first_message(&out).await;
    assert_eq!(meta["tls"], true, "{meta}");
    assert_eq!(meta["login"], "op", "{meta}");
    assert_eq!(header(&message, "X-Op-Idempotency-Key"), "op-5-mail");

    // Opportunistic TLS takes the offered STARTTLS too.
    let opportunistic = rule_with(addr.clone(), SmtpTls::Opportunistic, &password, &certs);
    sender()
        .deliver(&opportunistic, &failed_event(6), "op-6-mail")
        .await
        .unwrap();

    // A wrong password is the server's refusal, reported with the receiver.
    std::fs::write(&password, "wrong").unwrap();
    let err = sender()
        .deliver(&rule, &failed_event(7), "op-7-mail")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("email to ops@example.com"), "{text}");
    assert!(text.contains("535"), "the server's refusal: {text}");

    // Without the CA the server's certificate is not trusted, and nothing is sent.
    std::fs::write(&password, "s3cret").unwrap();
    let untrusted = crate::support::rule(
        "mail",
        email(addr, SmtpTls::Required, Some(("op", password)), None),
    );
    let err = sender()
        .deliver(&untrusted, &failed_event(8), "op-8-mail")
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Unreachable { .. }), "{err}");
    assert!(out.join("2.eml").exists() && !out.join("3.eml").exists());
}

fn rule_with(addr: String, tls: SmtpTls, password: &Path, certs: &Path) -> op_notify::Rule {
    crate::support::rule(
        "mail",
        email(
            addr,
            tls,
            Some(("op", password.to_path_buf())),
            Some(certs.join("ca.pem")),
        ),
    )
}
