//! `/v1/notify`: notification rules (issue 19). Listing needs a read scope; saving, removing
//! and testing need an admin token, because a rule makes every manager read files from its own
//! disk (an HMAC key, an SMTP password) and send to the address the rule names.
//!
//! A rule is checked fully before it is proposed: unknown JSON fields are refused (the stored
//! form decodes leniently, the API does not), then [`op_notify::Rule::new`] checks its structure,
//! URL and addresses and compiles its template. `test` delivers a sample event from the manager
//! that received the call, reading the secret files on that manager, and answers what the
//! receiver said (or a 502 naming the receiver and the reason). Automatic delivery of events is
//! the leader's worker in `crate::notify`; the list shows its committed position and health.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::Utc;
use op_proto::events::{DELIVERY_FAILED, NotifyRule, NotifyRuleInfo, NotifyTestAnswer};
use op_store::{Command, CommandResult};
use serde_json::Value;

use super::error::ApiError;
use super::extract::ApiBytes;
use crate::app::App;
use crate::auth::Caller;

/// How long `notify test` waits for the receiver (connection, sending and its answer).
const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET /v1/notify`: every reader sees the rules; only an admin (who manages them) sees the
/// whole URL of a webhook, whose path may be its credential.
pub async fn list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<NotifyRuleInfo>>, ApiError> {
    let mut rules = app.read(|s| s.notify_rules()).await?;
    if caller.scope != op_proto::api::Scope::Admin {
        for r in &mut rules {
            r.rule.channel.redact();
        }
    }
    Ok(Json(rules))
}

/// `PUT /v1/notify/{name}`: the body's `name` may be left out; when given it must match.
pub async fn put(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiBytes(body): ApiBytes,
) -> Result<(StatusCode, Json<NotifyRuleInfo>), ApiError> {
    let mut value = parse_body(&body)?;
    if let Some(object) = value.as_object_mut() {
        match object.get("name") {
            None => {
                object.insert("name".into(), Value::String(name.clone()));
            }
            Some(Value::String(given)) if *given == name => {}
            Some(given) => {
                return Err(ApiError::bad(
                    "invalid_rule",
                    format!("the body names the rule {given}, the path {name:?}"),
                ));
            }
        }
    }
    save(&app, caller, value).await
}

/// `POST /v1/notify`: the rule names itself.
pub async fn create(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiBytes(body): ApiBytes,
) -> Result<(StatusCode, Json<NotifyRuleInfo>), ApiError> {
    let value = parse_body(&body)?;
    save(&app, caller, value).await
}

pub async fn remove(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.write(Command::RemoveNotifyRule {
        name,
        at: Utc::now(),
        actor: caller.name,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/notify/{name}/test`: one delivery of a sample event, from this manager.
pub async fn test(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<NotifyTestAnswer>, ApiError> {
    // A POST is not behind the read barrier of GETs; `notify test` right after `notify add`
    // on another member must still find the rule.
    app.cluster.read_barrier().await?;
    let lookup = name.clone();
    let saved = app
        .read(move |s| s.notify_rule(&lookup))
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no notification rule named {name:?} (see agentcli notify list)"
            ))
        })?;
    // A rule saved by an older member may not pass this member's checks: say so, send nothing.
    let rule = op_notify::Rule::new(saved.rule).map_err(|e| {
        ApiError::bad(
            "invalid_rule",
            format!("the saved rule {name:?} is not valid here: {e}"),
        )
    })?;
    let sender =
        op_notify::Sender::new(TEST_TIMEOUT).map_err(|e| ApiError::Internal(e.to_string()))?;
    let event = op_notify::sample_event(Utc::now());
    let key = op_notify::idempotency_key(&name, event.id);
    match sender.deliver(&rule, &event, &key).await {
        Ok(receipt) => Ok(Json(NotifyTestAnswer {
            receiver: receipt.receiver,
            status: receipt.status,
            body: receipt.body,
        })),
        Err(e) => Err(ApiError::BadGateway {
            code: DELIVERY_FAILED,
            message: e.to_string(),
        }),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad("malformed_json", format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad(
            "invalid_rule",
            "the body must be a JSON object: {\"name\": ..., \"filter\": {...}, \"channel\": {...}}",
        ));
    }
    Ok(value)
}

async fn save(
    app: &App,
    caller: Caller,
    value: Value,
) -> Result<(StatusCode, Json<NotifyRuleInfo>), ApiError> {
    let spec: NotifyRule = serde_json::from_value(value.clone())
        .map_err(|e| ApiError::bad("invalid_rule", format!("the rule does not fit: {e}")))?;
    // The stored form decodes leniently (DESIGN 13.7), so a misspelt field would otherwise be
    // dropped without a word: anything the rule does not hold once decoded was not understood.
    let understood = serde_json::to_value(&spec).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(field) = unknown_field(&value, &understood, "") {
        return Err(ApiError::bad(
            "invalid_rule",
            format!("unknown field {field:?} in the rule"),
        ));
    }
    let rule =
        op_notify::Rule::new(spec).map_err(|e| ApiError::bad("invalid_rule", e.to_string()))?;
    match app
        .write(Command::PutNotifyRule {
            rule: Box::new(rule.spec().clone()),
            at: Utc::now(),
            actor: caller.name,
        })
        .await?
    {
        CommandResult::NotifyRule { rule, created } => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, Json(*rule)))
        }
        _ => Err(ApiError::Internal(
            "unexpected answer to PutNotifyRule".into(),
        )),
    }
}

/// The first key of `given` (as a dotted path) that `understood` does not have.
fn unknown_field(given: &Value, understood: &Value, at: &str) -> Option<String> {
    let (Value::Object(given), Value::Object(understood)) = (given, understood) else {
        return None;
    };
    for (key, value) in given {
        let path = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        match understood.get(key) {
            None => return Some(path),
            Some(inner) => {
                // Labels are free-form keys; everything else is a fixed set of fields.
                if path != "filter.labels"
                    && let Some(found) = unknown_field(value, inner, &path)
                {
                    return Some(found);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let given: Value = serde_json::from_str(
            r#"{"name":"a","filter":{"kind":["run.failed"]},"channel":{"type":"alertmanager","url":"http://am:9093"}}"#,
        )
        .unwrap();
        let spec: NotifyRule = serde_json::from_value(given.clone()).unwrap();
        let understood = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            unknown_field(&given, &understood, "").as_deref(),
            Some("filter.kind")
        );
        let given: Value = serde_json::from_str(
            r#"{"name":"a","filter":{"labels":{"role":"db"}},"channel":{"type":"webhook","url":"http://h","secret":"x"}}"#,
        )
        .unwrap();
        let spec: NotifyRule = serde_json::from_value(given.clone()).unwrap();
        let understood = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            unknown_field(&given, &understood, "").as_deref(),
            Some("channel.secret")
        );
        let given: Value = serde_json::from_str(
            r#"{"name":"a","filter":{"labels":{"role":"db"}},"channel":{"type":"webhook","url":"http://h"}}"#,
        )
        .unwrap();
        let spec: NotifyRule = serde_json::from_value(given.clone()).unwrap();
        let understood = serde_json::to_value(&spec).unwrap();
        assert_eq!(unknown_field(&given, &understood, ""), None);
    }
}
