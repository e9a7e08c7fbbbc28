//! `agentcli secret set|list|rm` (issue 24). The value comes from stdin or a file, never from
//! the command line (where `ps` and shell history would show it), and is never printed.

use std::io::{Read, Write};

use anyhow::{Context, anyhow};

use super::Ctx;
use crate::Outcome;
use crate::cli::{Format, SecretCommand};
use crate::output::{Table, local_time, write_json};

/// The value as given: one trailing newline (`echo`, a file's last line) is not part of it.
fn value_of(raw: Vec<u8>, from: &str) -> anyhow::Result<String> {
    let mut text =
        String::from_utf8(raw).map_err(|_| anyhow!("the value from {from} is not UTF-8 text"))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(anyhow!(
            "the value from {from} is empty; a secret needs a value (nothing was changed)"
        ));
    }
    Ok(text)
}

pub async fn run(ctx: &Ctx, what: SecretCommand) -> anyhow::Result<Outcome> {
    let mut out = crate::output::stdout();
    match what {
        SecretCommand::Set { name, from_file } => {
            op_proto::secret::validate_secret_name(&name)
                .map_err(|e| anyhow!("secret name {name:?} {e}"))?;
            let value = match &from_file {
                Some(path) => {
                    let raw = std::fs::read(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    value_of(raw, &path.display().to_string())?
                }
                None => {
                    let mut raw = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut raw)
                        .context("reading the value from stdin")?;
                    value_of(raw, "stdin")?
                }
            };
            let info = ctx.call(ctx.client.set_secret(&name, &value)).await?;
            drop(value);
            if ctx.format == Format::Json {
                write_json(&mut out, &info)?;
            } else {
                writeln!(out, "secret {} set", info.name)?;
            }
        }
        SecretCommand::List => {
            let secrets = ctx.call(ctx.client.list_secrets()).await?;
            if ctx.format == Format::Json {
                write_json(&mut out, &secrets)?;
            } else {
                let mut t = Table::new(&["NAME", "UPDATED", "BY"]);
                for s in &secrets {
                    t.row([
                        s.name.clone(),
                        local_time(s.updated_at),
                        s.updated_by.clone(),
                    ]);
                }
                t.write(&mut out)?;
            }
        }
        SecretCommand::Rm { name } => {
            ctx.call(ctx.client.remove_secret(&name)).await?;
            if ctx.format != Format::Json {
                writeln!(out, "secret {name} removed")?;
            }
        }
    }
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_dropped_and_empty_is_refused() {
        assert_eq!(value_of(b"pw\n".to_vec(), "stdin").unwrap(), "pw");
        assert_eq!(value_of(b"pw\n\n".to_vec(), "stdin").unwrap(), "pw\n");
        assert_eq!(value_of(b"p w".to_vec(), "stdin").unwrap(), "p w");
        assert!(value_of(b"\n".to_vec(), "stdin").is_err());
        assert!(value_of(Vec::new(), "stdin").is_err());
        assert!(value_of(vec![0xff], "stdin").is_err());
    }
}
