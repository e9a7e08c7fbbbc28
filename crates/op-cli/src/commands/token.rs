//! `agentcli token create|list|revoke` (admin scope).

use std::io::Write;

use anyhow::anyhow;
use op_proto::api::{CreateTokenRequest, Scope};

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
        } => {
            let scope = Scope::parse(&scope).ok_or_else(|| {
                anyhow!("unknown scope {scope:?}; use admin, operator, viewer or agent")
            })?;
            let req = CreateTokenRequest {
                name,
                scope,
                expires_in_secs: expires_in,
            };
            let created = ctx.call(ctx.client.create_token(&req)).await?;
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
                let mut t = Table::new(&["ID", "NAME", "SCOPE", "CREATED", "EXPIRES", "STATUS"]);
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
