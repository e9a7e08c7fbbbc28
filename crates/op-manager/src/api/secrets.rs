//! `/v1/secrets` (issue 24): set, list and remove secrets; never read one back.
//!
//! Listing the names needs an operator token (they write the jobs that use them); setting and
//! removing need an admin token; rotating the key (`POST /v1/cluster/secrets-key/rotate`) too.
//! The value is sealed here, on the member that received it, before the command is proposed, so
//! the raft log, snapshots, the state file and backups only ever hold ciphertext. No answer of
//! this module carries a value.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::Utc;
use op_proto::agent::{DesiredJob, Directive};
use op_proto::secret::{
    SecretInfo, SecretValues, SetSecretRequest, secret_refs, validate_secret_name,
    validate_secret_value,
};
use op_store::{Command, CommandResult};
use serde::Serialize;

use super::error::ApiError;
use super::extract::ApiJson;
use crate::app::App;
use crate::auth::Caller;
use crate::secrets::SecretsKey;

fn check_name(name: &str) -> Result<(), ApiError> {
    validate_secret_name(name)
        .map_err(|e| ApiError::bad("invalid_name", format!("secret name {name:?} {e}")))
}

pub async fn list(State(app): State<Arc<App>>) -> Result<Json<Vec<SecretInfo>>, ApiError> {
    Ok(Json(app.read(|s| s.secrets()).await?))
}

/// `PUT /v1/secrets/{*name}`: creates or replaces a secret.
pub async fn put(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<SetSecretRequest>,
) -> Result<(StatusCode, Json<SecretInfo>), ApiError> {
    check_name(&name)?;
    validate_secret_value(&req.value).map_err(|e| ApiError::bad("invalid_value", e))?;
    let key = app
        .secrets
        .current()
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let sealed = key.seal(&name, &req.value);
    drop(req);
    let result = app
        .write(Command::SetSecret {
            name,
            sealed,
            at: Utc::now(),
            actor: caller.name,
        })
        .await?;
    let CommandResult::Secret { info, created } = result else {
        return Err(ApiError::Internal("unexpected answer to SetSecret".into()));
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(info)))
}

pub async fn remove(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_name(&name)?;
    app.write(Command::RemoveSecret {
        name,
        at: Utc::now(),
        actor: caller.name,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Refuses a job whose `Env` names a secret that does not exist.
pub async fn check_refs(app: &App, env: &BTreeMap<String, String>) -> Result<(), ApiError> {
    let wanted = secret_refs(env);
    if wanted.is_empty() {
        return Ok(());
    }
    let known: BTreeSet<String> = app
        .read(|s| s.secrets())
        .await?
        .into_iter()
        .map(|s| s.name)
        .collect();
    let missing: Vec<&String> = wanted.difference(&known).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = missing.iter().map(|n| format!("{n:?}")).collect();
    Err(ApiError::bad(
        "unknown_secret",
        format!(
            "Env names secret(s) {} that do not exist; set them first: agentcli secret set NAME",
            names.join(", ")
        ),
    ))
}

/// The values of the secrets that `jobs` and the run directives among `directives` name, for
/// one node's sync answer. A secret this member cannot open is left out (the agent then fails
/// the runs that need it as "secret unavailable").
pub async fn resolve(
    app: &App,
    jobs: &[DesiredJob],
    directives: &[Directive],
) -> Result<SecretValues, ApiError> {
    let mut wanted = BTreeSet::new();
    for j in jobs {
        wanted.extend(secret_refs(&j.spec.env));
    }
    for d in directives {
        if let Directive::Run(r) = d {
            wanted.extend(secret_refs(&r.spec.env));
        }
    }
    if wanted.is_empty() {
        return Ok(SecretValues::default());
    }
    // Read the generation before the store: a change in between only makes the next answer
    // read again.
    let generation = *app.hub.subscribe().borrow();
    let opened = match app.secrets.cached(generation) {
        Some(o) => o,
        None => {
            let _one = app.secrets.refill.lock().await;
            match app.secrets.cached(generation) {
                Some(o) => o,
                None => {
                    let sealed = app.read(|s| s.sealed_secrets()).await?;
                    app.secrets
                        .cache(generation, app.secrets.open_many(&sealed))
                }
            }
        }
    };
    let (open, failed) = &*opened;
    if let Some((name, e)) = failed.iter().find(|(n, _)| wanted.contains(*n)) {
        tracing::debug!(secret = %name, error = %e, "a secret a node needs cannot be opened here");
    }
    Ok(SecretValues(
        wanted
            .iter()
            .filter_map(|n| open.get(n).map(|v| (n.clone(), v.clone())))
            .collect(),
    ))
}

/// What a key rotation did.
#[derive(Debug, Serialize)]
pub struct RotateAnswer {
    pub key_id: String,
    pub secrets: usize,
    pub members: usize,
}

/// `POST /v1/cluster/secrets-key/rotate`: a new key, handed to every member over the peer channel
/// (each keeps the old one beside it), then every secret re-sealed under it through raft. With no
/// key anywhere yet (a cluster from before secrets) it makes the first one.
pub async fn rotate(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<RotateAnswer>, ApiError> {
    let ring = app.secrets.ring();
    let sealed = app.read(|s| s.sealed_secrets()).await?;
    let (open, failed) = app.secrets.open_many(&sealed);
    if let Some((_, e)) = failed.into_iter().next() {
        return Err(ApiError::Unavailable(format!(
            "cannot rotate: {e} (run the rotation on a member that holds the key)"
        )));
    }
    let key = SecretsKey::generate();
    let new_ring = ring.rotated(key.clone());
    let members = crate::raft::secrets_key::hand_out(&app.cluster, &new_ring)
        .await
        .map_err(ApiError::Unavailable)?;
    app.secrets
        .install(new_ring)
        .map_err(|e| ApiError::Internal(format!("writing secrets.key: {e}")))?;
    let resealed: BTreeMap<String, op_store::SealedSecret> = open
        .iter()
        .map(|(name, value)| (name.clone(), key.seal(name, value)))
        .collect();
    let count = resealed.len();
    let replaces = sealed
        .iter()
        .map(|(name, s)| (name.clone(), s.nonce.clone()))
        .collect();
    app.write(Command::RekeySecrets {
        sealed: resealed,
        at: Utc::now(),
        actor: caller.name,
        replaces,
    })
    .await?;
    tracing::info!(
        key_id = key.id(),
        secrets = count,
        members,
        "secrets key rotated"
    );
    Ok(Json(RotateAnswer {
        key_id: key.id().to_string(),
        secrets: count,
        members,
    }))
}
