//! A rule checked and compiled: the API calls [`Rule::new`] before saving a rule, and the
//! delivery loop holds the result. Checks that need this crate's engines live here (the template
//! parses and renders a sample event, the URL is one reqwest accepts, the addresses are ones
//! lettre accepts); the structural ones are [`NotifyRule::validate`]'s.

use minijinja::{Environment, UndefinedBehavior};
use op_proto::events::{Channel, Event, NotifyRule, RuleError};

use crate::payload;

/// The template's name inside its environment.
const BODY: &str = "body";

/// A validated rule with its body template compiled.
#[derive(Debug)]
pub struct Rule {
    spec: NotifyRule,
    template: Option<Environment<'static>>,
}

impl Rule {
    /// Validates `spec` fully; the error says what is wrong and changes nothing.
    pub fn new(spec: NotifyRule) -> Result<Rule, RuleError> {
        spec.validate()?;
        let mut template = None;
        match &spec.channel {
            Channel::Webhook {
                url, template: t, ..
            } => {
                check_url(url)?;
                if let Some(source) = t {
                    let mut env = Environment::new();
                    // A misspelt variable is an error, not an empty string in a message.
                    env.set_undefined_behavior(UndefinedBehavior::Strict);
                    env.add_template_owned(BODY, source.clone()).map_err(|e| {
                        RuleError::Template {
                            reason: template_error(&e),
                        }
                    })?;
                    check_variables(&env)?;
                    template = Some(env);
                }
            }
            Channel::Alertmanager { url } => check_url(url)?,
            Channel::Email { to, from, .. } => {
                for address in to.iter().chain(from) {
                    address
                        .parse::<lettre::Address>()
                        .map_err(|e| RuleError::Email {
                            address: address.clone(),
                            reason: e.to_string(),
                        })?;
                }
            }
        }
        let rule = Rule { spec, template };
        // Render a sample event now, so a template naming a variable that does not exist is
        // refused when the rule is saved rather than when the first incident happens.
        let sample = crate::sample_event(chrono::DateTime::UNIX_EPOCH);
        rule.render_template(&sample, "sample-key")
            .map_err(|reason| RuleError::Template { reason })?;
        Ok(rule)
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn spec(&self) -> &NotifyRule {
        &self.spec
    }

    pub fn channel(&self) -> &Channel {
        &self.spec.channel
    }

    /// Whether the rule sends `event` (kinds, job globs, host labels, threshold).
    pub fn matches(&self, event: &Event) -> bool {
        self.spec.filter.matches(event)
    }

    /// The rule's template rendered with `event`, or `None` for a rule without one.
    pub fn render_template(&self, event: &Event, key: &str) -> Result<Option<String>, String> {
        let Some(env) = &self.template else {
            return Ok(None);
        };
        let context = payload::template_context(self.name(), event, key);
        let template = env.get_template(BODY).map_err(|e| template_error(&e))?;
        template
            .render(minijinja::Value::from(minijinja::value::Serde(&context)))
            .map(Some)
            .map_err(|e| template_error(&e))
    }
}

/// Refuses a template that names a variable the context does not have: `{{ summry|tojson }}`
/// would otherwise render `null` into every message instead of failing when the rule is saved.
fn check_variables(env: &Environment<'static>) -> Result<(), RuleError> {
    let sample = crate::sample_event(chrono::DateTime::UNIX_EPOCH);
    let context = serde_json::to_value(payload::template_context("rule", &sample, "key"))
        .expect("the context serializes");
    let known: Vec<&str> = context
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let template = env.get_template(BODY).map_err(|e| RuleError::Template {
        reason: template_error(&e),
    })?;
    let mut unknown: Vec<String> = template
        .undeclared_variables(false)
        .into_iter()
        .filter(|name| !known.contains(&name.as_str()) && !env.globals().any(|(g, _)| g == name))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort();
    Err(RuleError::Template {
        reason: format!(
            "unknown variable {}; the template can use: {}",
            unknown.join(", "),
            known.join(", ")
        ),
    })
}

/// A MiniJinja error with its line, for the operator who wrote the template.
fn template_error(e: &minijinja::Error) -> String {
    let what = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    match e.line() {
        Some(line) => format!("line {line}: {what}"),
        None => what,
    }
}

fn check_url(url: &str) -> Result<(), RuleError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| RuleError::Url {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(RuleError::Url {
            url: url.to_string(),
            reason: "only http:// and https:// URLs are accepted".into(),
        });
    }
    Ok(())
}
