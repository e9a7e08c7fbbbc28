//! `agentcli token create|list|revoke` (admin scope).

use std::io::Write;

use anyhow::anyhow;
use op_proto::api::{CreatePolicyTokenRequest, Scope};
use op_proto::policy::TokenPolicy;

use super::Ctx;
use crate::Outcome;
use crate::cli::{Format, TokenCommand};
use crate::output::{Table, local_time, write_json};

pub async fn run(ctx: &Ctx, what: TokenCommand) -> anyhow::Result<Outcome> {
    let mut out = crate::output::stdout();
    match what {
        TokenCommand::Create {
            name,
            scope,
            expires_in,
            jobs,
            hosts,
            verbs,
        } => {
            let scope = Scope::parse(&scope).ok_or_else(|| {
                anyhow!("unknown scope {scope:?}; use admin, operator, viewer or agent")
            })?;
            // Checked by the manager (a 400 names the bad glob, selector or verb).
            let policy =
                (!jobs.is_empty() || !hosts.is_empty() || !verbs.is_empty()).then(|| TokenPolicy {
                    jobs,
                    hosts,
                    verbs: verbs.into_iter().map(|v| v.trim().to_string()).collect(),
                });
            let req = CreatePolicyTokenRequest {
                name,
                scope,
                expires_in_secs: expires_in,
                policy,
            };
            let created = ctx.call(ctx.client.create_policy_token(&req)).await?;
            if ctx.format == Format::Json {
                write_json(&mut out, &created)?;
            } else {
                writeln!(out, "{}", created.secret)?;
                eprintln!(
                    "token {} ({}, id {}) created; the secret above is shown only once",
                    created.info.name,
                    created.info.scope.as_str(),
                    created.info.id
                );
            }
        }
        TokenCommand::List => {
            let tokens = ctx.call(ctx.client.list_tokens()).await?;
            if ctx.format == Format::Json {
                write_json(&mut out, &tokens)?;
            } else {
                let mut t = Table::new(&[
                    "ID", "NAME", "SCOPE", "CREATED", "EXPIRES", "STATUS", "POLICY",
                ]);
                let now = chrono::Utc::now();
                for tok in &tokens {
                    t.row([
                        tok.id.clone(),
                        tok.name.clone(),
                        tok.scope.as_str().to_string(),
                        local_time(tok.created_at),
                        tok.expires_at
                            .map(local_time)
                            .unwrap_or_else(|| "never".into()),
                        tok.status(now).to_string(),
                        tok.policy
                            .as_ref()
                            .map_or_else(|| "-".into(), |p| p.summary()),
                    ]);
                }
                t.write(&mut out)?;
            }
        }
        TokenCommand::Revoke { id } => {
            let info = ctx.call(ctx.client.revoke_token(&id)).await?;
            if ctx.format == Format::Json {
                write_json(&mut out, &info)?;
            } else {
                writeln!(out, "token {} ({}) revoked", info.id, info.name)?;
            }
        }
    }
    Ok(Outcome::Ok)
}
