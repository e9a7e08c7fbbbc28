//! `agentcli label NODE k=v ... k-`: manager-set labels of one node.

use std::io::Write;

use anyhow::bail;
use op_proto::api::LabelRequest;

use super::Ctx;
use crate::Outcome;
use crate::cli::Format;
use crate::output::write_json;

/// `k=v` sets, `k-` removes; anything else is refused before asking the manager.
pub fn request(args: &[String]) -> anyhow::Result<LabelRequest> {
    let mut req = LabelRequest::default();
    for a in args {
        if let Some((k, v)) = a.split_once('=') {
            if k.trim().is_empty() {
                bail!("label {a:?} has no key: write KEY=VALUE");
            }
            req.set.insert(k.to_string(), v.to_string());
        } else if let Some(k) = a.strip_suffix('-').filter(|k| !k.is_empty()) {
            req.remove.push(k.to_string());
        } else {
            bail!("label {a:?} is neither KEY=VALUE (set) nor KEY- (remove)");
        }
    }
    Ok(req)
}

pub async fn run(ctx: &Ctx, node: &str, args: &[String]) -> anyhow::Result<Outcome> {
    let req = request(args)?;
    let n = ctx.call(ctx.client.label_node(node, &req)).await?;
    let mut out = crate::output::stdout();
    if ctx.format == Format::Json {
        write_json(&mut out, &n)?;
    } else {
        let labels = n.labels_text();
        writeln!(
            out,
            "{}: {}",
            n.hostname,
            if labels.is_empty() {
                "no labels".to_string()
            } else {
                labels.join(",")
            }
        )?;
    }
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_remove() {
        let req = request(&["tier=gold".into(), "zone=".into(), "old-".into()]).unwrap();
        assert_eq!(req.set["tier"], "gold");
        assert_eq!(req.set["zone"], "");
        assert_eq!(req.remove, ["old"]);
        for bad in ["tier", "=gold", "-"] {
            assert!(request(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
