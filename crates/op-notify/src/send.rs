//! One delivery attempt to one receiver. [`Sender::deliver`] reads the channel's secret files,
//! builds the payload ([`crate::payload`]), sends it, and answers what the receiver said: a
//! [`Receipt`] for a success (`notify test` prints it), a [`DeliveryError`] naming the receiver
//! and the reason otherwise. Retrying is the [`crate::DeliveryQueue`]'s business.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use op_proto::events::{Channel, Event, SmtpTls};
use serde::Serialize;

use crate::Rule;
use crate::payload::{self, KEY_HEADER, SIGNATURE_HEADER};

/// How much of a receiver's answer a receipt or an error keeps.
const ANSWER_BYTES: usize = 512;

/// What the receiver answered to a delivery it accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    /// The receiver, named without credentials ([`Channel::receiver`]).
    pub receiver: String,
    /// The HTTP status, or the SMTP reply code.
    pub status: u16,
    /// The first bytes of the answer's body (or the SMTP reply text).
    pub body: String,
}

/// Why a delivery failed. Every message starts with the receiver.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("{receiver}: cannot read {what} {path:?}: {source}")]
    Secret {
        receiver: String,
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{receiver}: body template: {reason}")]
    Template { receiver: String, reason: String },
    #[error("{receiver}: {reason}")]
    Unreachable { receiver: String, reason: String },
    #[error("{receiver} answered {status}: {body}")]
    Refused {
        receiver: String,
        status: u16,
        body: String,
    },
    #[error("cannot set up the notification client: {reason}")]
    Setup { reason: String },
}

/// Sends notifications; holds the HTTP client so connections are reused across deliveries.
#[derive(Debug, Clone)]
pub struct Sender {
    http: reqwest::Client,
    timeout: Duration,
}

impl Sender {
    /// A sender whose every attempt (connect, send, answer) ends within `timeout`.
    pub fn new(timeout: Duration) -> Result<Sender, DeliveryError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            // A redirect would carry the signed body to a host the rule does not name.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("op-agent-notify/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DeliveryError::Setup {
                reason: e.to_string(),
            })?;
        Ok(Sender { http, timeout })
    }

    /// One attempt to deliver `event` through `rule`'s channel, carrying `key`.
    pub async fn deliver(
        &self,
        rule: &Rule,
        event: &Event,
        key: &str,
    ) -> Result<Receipt, DeliveryError> {
        let receiver = rule.channel().receiver();
        match rule.channel() {
            Channel::Webhook {
                url, secret_file, ..
            } => {
                let body = match rule.render_template(event, key) {
                    Ok(Some(text)) => text.into_bytes(),
                    Ok(None) => payload::webhook_json(rule.name(), event, key),
                    Err(reason) => return Err(DeliveryError::Template { receiver, reason }),
                };
                let mut request = self
                    .http
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(KEY_HEADER, key);
                if let Some(path) = secret_file {
                    let secret = read_secret(&receiver, "the webhook secret file", path).await?;
                    request = request.header(SIGNATURE_HEADER, payload::signature(&secret, &body));
                }
                self.post(receiver, request.body(body)).await
            }
            Channel::Alertmanager { url } => {
                let alerts = [payload::alertmanager_alert(event, key)];
                let endpoint = format!("{}/api/v2/alerts", url.trim_end_matches('/'));
                let request = self
                    .http
                    .post(endpoint)
                    .header(KEY_HEADER, key)
                    .json(&alerts);
                self.post(receiver, request).await
            }
            Channel::Email {
                to,
                smtp,
                from,
                user,
                password_file,
                tls,
                ca_file,
            } => {
                let mail = EmailChannel {
                    to,
                    smtp,
                    from: from.as_deref(),
                    user: user.as_deref(),
                    password_file: password_file.as_deref(),
                    tls: *tls,
                    ca_file: ca_file.as_deref(),
                };
                self.mail(receiver, &mail, event, key).await
            }
        }
    }

    async fn post(
        &self,
        receiver: String,
        request: reqwest::RequestBuilder,
    ) -> Result<Receipt, DeliveryError> {
        let response = request
            .send()
            .await
            // reqwest names the whole URL in its errors; its path and query may be the
            // credential (Slack's webhooks), and `receiver` already names the origin.
            .map_err(|e| DeliveryError::Unreachable {
                receiver: receiver.clone(),
                reason: error_chain(&e.without_url()),
            })?;
        let status = response.status().as_u16();
        let success = response.status().is_success();
        // The answer is informative only: a body that cannot be read does not undo a 2xx.
        let bytes = response.bytes().await.unwrap_or_default();
        let body = answer(&bytes);
        if success {
            Ok(Receipt {
                receiver,
                status,
                body,
            })
        } else {
            Err(DeliveryError::Refused {
                receiver,
                status,
                body,
            })
        }
    }

    async fn mail(
        &self,
        receiver: String,
        mail: &EmailChannel<'_>,
        event: &Event,
        key: &str,
    ) -> Result<Receipt, DeliveryError> {
        let unreachable = |reason: String| DeliveryError::Unreachable {
            receiver: receiver.clone(),
            reason,
        };
        let (host, port) = mail
            .smtp
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(|| unreachable(format!("{:?} is not HOST:PORT", mail.smtp)))?;
        let from: Mailbox = mail
            .from
            .unwrap_or("op-agent@localhost")
            .parse()
            .map_err(|e| unreachable(format!("sender address: {e}")))?;
        let mut builder = Message::builder()
            .from(from)
            .subject(payload::email_subject(event))
            .message_id(Some(format!("<{key}@op-agent>")))
            .header(IdempotencyKey(key.to_string()));
        for to in mail.to {
            builder = builder.to(to
                .parse()
                .map_err(|e| unreachable(format!("recipient {to:?}: {e}")))?);
        }
        let message = builder
            .body(payload::email_text(event, key))
            .map_err(|e| unreachable(format!("cannot build the message: {e}")))?;

        let mut params = TlsParameters::builder(host.to_string());
        if let Some(path) = mail.ca_file {
            let pem = tokio::fs::read(path)
                .await
                .map_err(|source| DeliveryError::Secret {
                    receiver: receiver.clone(),
                    what: "the CA file",
                    path: path.to_path_buf(),
                    source,
                })?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| unreachable(format!("CA file {path:?}: {e}")))?;
            params = params.add_root_certificate(cert);
        }
        let params = params
            .build()
            .map_err(|e| unreachable(format!("TLS setup: {e}")))?;
        let tls = match mail.tls {
            SmtpTls::Opportunistic => Tls::Opportunistic(params),
            SmtpTls::Required => Tls::Required(params),
        };
        let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(tls)
            .timeout(Some(self.timeout));
        if let (Some(user), Some(path)) = (mail.user, mail.password_file) {
            let password = read_secret(&receiver, "the SMTP password file", path).await?;
            let password = String::from_utf8(password).map_err(|_| {
                unreachable(format!("the SMTP password file {path:?} is not UTF-8"))
            })?;
            transport = transport.credentials(Credentials::new(user.to_string(), password));
        }
        // The whole conversation is bounded: lettre's timeout covers each read and write, not a
        // server that keeps answering slowly.
        let response = tokio::time::timeout(self.timeout, transport.build().send(message))
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| unreachable(error_chain(&e)))?;
        Ok(Receipt {
            receiver,
            status: u16::from(response.code()),
            body: answer(response.message().collect::<Vec<_>>().join(" ").as_bytes()),
        })
    }
}

/// The parts of an email channel a delivery uses.
struct EmailChannel<'a> {
    to: &'a [String],
    smtp: &'a str,
    from: Option<&'a str>,
    user: Option<&'a str>,
    password_file: Option<&'a Path>,
    tls: SmtpTls,
    ca_file: Option<&'a Path>,
}

/// The idempotency key as a mail header (the Message-ID carries it too).
#[derive(Debug, Clone)]
struct IdempotencyKey(String);

impl Header for IdempotencyKey {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str(KEY_HEADER)
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(IdempotencyKey(s.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// A secret file's bytes, without the trailing newline an editor or `echo` adds. Read on every
/// attempt, so a rotated key is used from the next delivery on.
async fn read_secret(
    receiver: &str,
    what: &'static str,
    path: &Path,
) -> Result<Vec<u8>, DeliveryError> {
    let mut bytes = tokio::fs::read(path)
        .await
        .map_err(|source| DeliveryError::Secret {
            receiver: receiver.to_string(),
            what,
            path: path.to_path_buf(),
            source,
        })?;
    while bytes.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
        bytes.pop();
    }
    Ok(bytes)
}

/// The first bytes of an answer, as text.
fn answer(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(ANSWER_BYTES)];
    String::from_utf8_lossy(cut).trim().to_string()
}

/// An error with its causes (`error sending request: connection refused`), which is what the
/// operator needs to see.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}
