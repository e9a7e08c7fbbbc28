//! `Rule::new` is the full check the API makes before saving a rule: the structural checks of
//! op-proto, then what needs this crate's engines.

use op_notify::{Channel, NotifyFilter, NotifyRule, Rule, RuleError};

fn with_template(template: &str) -> Result<Rule, RuleError> {
    Rule::new(NotifyRule {
        name: "slack".into(),
        filter: NotifyFilter::default(),
        channel: Channel::Webhook {
            url: "https://hooks.example.com/x".into(),
            template: Some(template.into()),
            secret_file: None,
        },
    })
}

#[test]
fn a_template_that_does_not_parse_is_refused_with_its_line() {
    let err = with_template("{\"text\": {{ summary|tojson }}\n{% if job %}").unwrap_err();
    assert!(matches!(err, RuleError::Template { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("the body template is not valid: line 2"),
        "{text}"
    );
    let err = with_template("{{ summary | }}").unwrap_err();
    assert!(
        err.to_string().contains("the body template is not valid"),
        "{err}"
    );
}

#[test]
fn a_template_naming_an_unknown_variable_is_refused_when_saved() {
    let err = with_template("{\"text\": {{ summry|tojson }}}").unwrap_err();
    assert!(matches!(err, RuleError::Template { .. }), "{err}");
    assert!(
        err.to_string().starts_with(
            "the body template is not valid: unknown variable summry; the template can use:"
        ),
        "{err}"
    );
    // Variables the template sets itself, loop variables and functions are not unknown.
    with_template("{% set n = hosts|length %}{% for h in hosts %}{{ h }}{{ loop.index }}{% endfor %}{{ n }}{{ range(2) }}").unwrap();
    // Every field of the event and the extras are there, null ones included.
    with_template(
        "{{ id }} {{ kind }} {{ time }} {{ job }} {{ package }} {{ hosts|join(',') }} \
         {{ host_count }} {{ selected_hosts }} {{ summary }} {{ url }} {{ incident }} \
         {{ opened_at }} {{ signature }} {{ rule }} {{ idempotency_key }} {{ hosts_text }}",
    )
    .unwrap();
}

#[test]
fn a_structural_error_is_reported_before_anything_else() {
    let err = Rule::new(NotifyRule {
        name: "am".into(),
        filter: NotifyFilter::default(),
        channel: Channel::Alertmanager {
            url: "gopher://am:9093".into(),
        },
    })
    .unwrap_err();
    assert!(matches!(err, RuleError::Url { .. }), "{err}");
}

/// The threshold case through the compiled rule: 50 % does not fire for 1 failing host
/// of 3, fires for 2, and the recovery of an incident it sent is sent too.
#[test]
fn a_half_of_the_hosts_threshold_through_the_rule() {
    use op_notify::EventKind;
    use op_proto::events::Threshold;

    let rule = Rule::new(NotifyRule {
        name: "half".into(),
        filter: NotifyFilter {
            kinds: vec![EventKind::RunFailed],
            jobs: vec!["back*".into()],
            min_hosts: Some(Threshold::Percent(50)),
            ..Default::default()
        },
        channel: Channel::Alertmanager {
            url: "http://127.0.0.1:9093".into(),
        },
    })
    .unwrap();
    let mut event = crate::support::failed_event(1);
    event.hosts.truncate(1);
    event.host_count = 1;
    assert!(!rule.matches(&event), "1 of 3 is under 50 %");
    event.host_count = 2;
    assert!(rule.matches(&event), "2 of 3");
    event.kind = EventKind::RunRecovered;
    assert!(rule.matches(&event), "the recovery of run.failed");
    event.job = Some("deploy".into());
    assert!(!rule.matches(&event), "another job");
}
