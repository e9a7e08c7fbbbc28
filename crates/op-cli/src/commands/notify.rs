//! `agentcli notify add|list|remove|test`: notification rules (issue 19). `add` builds the rule
//! from flags (reading `--template` here, on the client) and the manager checks it fully: an
//! unknown kind, a bad URL or a template that does not parse comes back as a 400 naming the
//! problem, and nothing is saved. Secret files are only named: each manager reads them from its
//! own disk when it sends. `test` exits 1 when the receiver could not be reached or refused.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use op_client::ClientError;
use op_proto::events::{
    Channel, DELIVERY_FAILED, EventKind, NotifyFilter, NotifyRule, SmtpTls, Threshold,
};

use super::Ctx;
use crate::Outcome;
use crate::cli::{Format, NotifyAdd, NotifyCommand};
use crate::output::{Table, write_json};

pub async fn run(ctx: &Ctx, what: NotifyCommand) -> anyhow::Result<Outcome> {
    let mut out = crate::output::stdout();
    match what {
        NotifyCommand::Add(add) => {
            let NotifyAdd {
                name,
                webhook,
                alertmanager,
                email,
                kinds,
                jobs,
                labels,
                min_hosts,
                template,
                secret_file,
                smtp,
                smtp_user,
                smtp_password_file,
                smtp_tls,
                from,
            } = *add;
            let channel = if let Some(url) = webhook {
                let template = match template {
                    Some(path) => Some(read_template(&path)?),
                    None => None,
                };
                Channel::Webhook {
                    url,
                    template,
                    secret_file,
                }
            } else if let Some(url) = alertmanager {
                Channel::Alertmanager { url }
            } else {
                let smtp = smtp.ok_or_else(|| anyhow!("--email needs --smtp HOST:PORT"))?;
                let tls = match smtp_tls.as_str() {
                    "opportunistic" => SmtpTls::Opportunistic,
                    "required" => SmtpTls::Required,
                    other => bail!("--smtp-tls {other:?}: use opportunistic or required"),
                };
                Channel::Email {
                    to: email,
                    smtp,
                    from,
                    user: smtp_user,
                    password_file: smtp_password_file,
                    tls,
                    ca_file: None,
                }
            };
            let filter = NotifyFilter {
                kinds: kinds.iter().map(|k| EventKind::parse(k)).collect(),
                jobs,
                labels: parse_labels(&labels)?,
                min_hosts: match min_hosts {
                    Some(text) => {
                        let t = Threshold::parse(&text).map_err(|e| anyhow!("--min-hosts: {e}"))?;
                        t.validate().map_err(|e| anyhow!("--min-hosts: {e}"))?;
                        Some(t)
                    }
                    None => None,
                },
            };
            let rule = NotifyRule {
                name,
                filter,
                channel,
            };
            let saved = ctx.call(ctx.client.put_notify_rule(&rule)).await?;
            if ctx.format == Format::Json {
                write_json(&mut out, &saved)?;
            } else {
                writeln!(
                    out,
                    "notify rule {} saved: {}",
                    saved.rule.name,
                    saved.rule.channel.receiver()
                )?;
            }
        }
        NotifyCommand::List => {
            let rules = ctx.call(ctx.client.notify_rules()).await?;
            if ctx.format == Format::Json {
                write_json(&mut out, &rules)?;
            } else {
                let wide = ctx.format == Format::Wide;
                let mut headers = vec!["NAME", "CHANNEL", "KINDS", "JOBS", "MIN HOSTS"];
                if wide {
                    headers.push("LABELS");
                }
                headers.push("HEALTH");
                let mut t = Table::new(&headers);
                for info in &rules {
                    let f = &info.rule.filter;
                    let mut row = vec![
                        info.rule.name.clone(),
                        info.rule.channel.receiver(),
                        or_all(f.kinds.iter().map(ToString::to_string).collect()),
                        or_all(f.jobs.clone()),
                        f.min_hosts.map_or_else(|| "-".into(), |t| t.to_string()),
                    ];
                    if wide {
                        row.push(or_all(
                            f.labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                        ));
                    }
                    // As the leader last committed it: `ok 12s ago`, `failing (3): <error>`
                    // or `never sent` (`notify test` sends outside the queue and does not count).
                    row.push(info.delivery.health(chrono::Utc::now()));
                    t.row(row);
                }
                t.write(&mut out)?;
            }
        }
        NotifyCommand::Remove { name } => {
            ctx.call(ctx.client.remove_notify_rule(&name)).await?;
            if ctx.format == Format::Json {
                write_json(&mut out, &serde_json::json!({ "removed": name }))?;
            } else {
                writeln!(out, "notify rule {name} removed")?;
            }
        }
        NotifyCommand::Test { name } => match ctx.client.test_notify_rule(&name).await {
            Ok(answer) => {
                if ctx.format == Format::Json {
                    write_json(&mut out, &answer)?;
                } else {
                    writeln!(out, "{} answered {}", answer.receiver, answer.status)?;
                    if !answer.body.is_empty() {
                        writeln!(out, "{}", answer.body)?;
                    }
                }
            }
            Err(ClientError::Api { body, .. }) if body.code == DELIVERY_FAILED => {
                eprintln!(
                    "agentcli: notify test {name}: delivery failed: {}",
                    body.message
                );
                return Ok(Outcome::Problem);
            }
            Err(e) => return Err(ctx.conn.explain(e)),
        },
    }
    Ok(Outcome::Ok)
}

fn read_template(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the template file {}", path.display()))
}

fn parse_labels(labels: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(anyhow!(
                "--label {l:?}: expected KEY=VALUE, e.g. --label role=db"
            )),
        })
        .collect()
}

fn or_all(items: Vec<String>) -> String {
    if items.is_empty() {
        "all".into()
    } else {
        items.join(",")
    }
}
