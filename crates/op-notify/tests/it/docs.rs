//! docs/notifications.md stays true: its template examples are accepted and render JSON, and its
//! signature check is the one the webhook test runs ([`signature_check`]).

use op_notify::Channel;

use crate::support::{failed_event, rule};

fn doc() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/notifications.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fenced blocks of docs/notifications.md in `language`.
pub fn blocks(language: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in doc().lines() {
        match &mut current {
            None if line.trim() == format!("```{language}") => current = Some(String::new()),
            Some(block) if line.trim() == "```" => {
                out.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    out
}

/// The documented Python `verify(key, body, header)`.
pub fn signature_check() -> String {
    let blocks = blocks("python");
    assert_eq!(
        blocks.len(),
        1,
        "docs/notifications.md has one python block"
    );
    assert!(blocks[0].contains("def verify("), "{}", blocks[0]);
    blocks[0].clone()
}

#[test]
fn every_documented_template_is_accepted_and_renders_json() {
    let templates = blocks("jinja");
    assert_eq!(
        templates.len(),
        3,
        "Slack/Mattermost, DingTalk and WeCom examples"
    );
    let event = failed_event(41);
    for template in templates {
        let rule = rule(
            "chat",
            Channel::Webhook {
                url: "https://chat.example.com/hook".into(),
                template: Some(template.clone()),
                secret_file: None,
            },
        );
        let body = rule.render_template(&event, "op-41-chat").unwrap().unwrap();
        let json: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{template} renders {body}: {e}"));
        let text = json.to_string();
        assert!(text.contains("backup failed on 3 of 3 hosts"), "{text}");
        assert!(text.contains("db-01, db-02, web-01"), "{text}");
    }
}
