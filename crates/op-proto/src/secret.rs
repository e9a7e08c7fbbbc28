//! Secrets (issue 24): named values a job uses through `"Env": {"DB_PW": "secret:db/pw"}`.
//!
//! The manager keeps them encrypted in its replicated state and resolves them only into the sync
//! answers of the nodes whose jobs use them ([`crate::agent::DesiredState::secrets`]). The agent
//! keeps the values in memory only, puts them into the run's environment and masks them in the
//! run's output. Nothing in this module ever holds a value beyond [`SecretValues`], whose `Debug`
//! form names the secrets only.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The prefix of an `Env` value that names a secret.
pub const SECRET_PREFIX: &str = "secret:";
/// Longest secret name.
pub const MAX_SECRET_NAME: usize = 128;
/// Largest secret value, in bytes.
pub const MAX_SECRET_VALUE: usize = 64 * 1024;
/// What replaces a secret's value in captured output.
pub const MASK: &str = "***";

/// Checks a secret name: 1..=128 of `[A-Za-z0-9._/-]`, no empty, `.` or `..` path segment, no
/// leading or trailing `/` (so `db/pw` is a name, `/db`, `db//pw` and `../x` are not).
pub fn validate_secret_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_SECRET_NAME {
        return Err(format!(
            "is {} characters long; at most {MAX_SECRET_NAME} are allowed",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
    {
        return Err(format!(
            "contains {bad:?}; only letters, digits, '.', '_', '-' and '/' are allowed"
        ));
    }
    if name
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err("has an empty, '.' or '..' part between slashes".into());
    }
    Ok(())
}

/// The secret an `Env` value names, if it names one (`secret:db/pw` → `db/pw`).
pub fn secret_ref(value: &str) -> Option<&str> {
    value.strip_prefix(SECRET_PREFIX)
}

/// Every secret the `Env` map names, sorted and without repeats.
pub fn secret_refs(env: &BTreeMap<String, String>) -> BTreeSet<String> {
    env.values()
        .filter_map(|v| secret_ref(v))
        .map(str::to_string)
        .collect()
}

/// A secret as `agentcli secret list` shows it: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    pub name: String,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

/// `PUT /v1/secrets/NAME`: the value, as UTF-8 text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSecretRequest {
    #[serde(deserialize_with = "string_not_echoed")]
    pub value: String,
}

/// The value as a JSON string. serde's own refusal of another type quotes what it got
/// (`invalid type: integer `1234`, expected a string`), and a refusal must never repeat a
/// secret, so any other type is refused by its kind alone.
fn string_not_echoed<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::de::Error;
    let kind = match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => return Ok(s),
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    };
    Err(D::Error::custom(format!(
        "the secret value is {kind}; it must be a JSON string (the value is not repeated here)"
    )))
}

impl std::fmt::Debug for SetSecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetSecretRequest").finish_non_exhaustive()
    }
}

/// Checks a value before it is stored: not empty, no NUL (it goes into an environment), at most
/// [`MAX_SECRET_VALUE`] bytes.
pub fn validate_secret_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("the value is empty; a secret needs a value".into());
    }
    if value.len() > MAX_SECRET_VALUE {
        return Err(format!(
            "the value is {} bytes; at most {MAX_SECRET_VALUE} are allowed",
            value.len()
        ));
    }
    if value.contains('\0') {
        return Err("the value contains a NUL byte, which an environment cannot hold".into());
    }
    Ok(())
}

/// Resolved secret values, name → value, as a sync answer carries them to an agent. Its `Debug`
/// form shows the names only, so a logged desired state never shows a value.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretValues(pub BTreeMap<String, String>);

impl SecretValues {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// What a viewer sees of an `Env` map: the names, every value replaced by [`MASK`] (a reference
/// to a secret is shown as such: it names the secret, not its value).
pub fn redact_env(env: &mut BTreeMap<String, String>) {
    for v in env.values_mut() {
        if secret_ref(v).is_none() {
            *v = MASK.to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["db/pw", "a", "A.b_c-d/e/f", "x/y.z"] {
            assert!(validate_secret_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "/db", "db/", "db//pw", "../x", "a/./b", "a b", "a:b", "é",
        ] {
            assert!(validate_secret_name(bad).is_err(), "{bad}");
        }
        assert!(validate_secret_name(&"a".repeat(129)).is_err());
        // Callers put the name before the reason (`secret name "../x" has ...`): the reason
        // must not repeat it.
        for bad in ["../x", "/db", "db//pw"] {
            let reason = validate_secret_name(bad).unwrap_err();
            assert!(!reason.contains(bad), "{bad}: {reason}");
        }
    }

    #[test]
    fn refs_and_debug() {
        let env = BTreeMap::from([
            ("A".to_string(), "secret:db/pw".to_string()),
            ("B".to_string(), "plain".to_string()),
            ("C".to_string(), "secret:db/pw".to_string()),
        ]);
        assert_eq!(secret_refs(&env), BTreeSet::from(["db/pw".to_string()]));
        let v = SecretValues(BTreeMap::from([("db/pw".into(), "hunter2".into())]));
        assert!(!format!("{v:?}").contains("hunter2"));
        let mut e = env.clone();
        redact_env(&mut e);
        assert_eq!(e["B"], MASK);
        assert_eq!(e["A"], "secret:db/pw");
    }

    #[test]
    fn a_value_of_another_type_is_refused_without_repeating_it() {
        for body in [
            r#"{"value": 982734561}"#,
            r#"{"value": 9827345.61}"#,
            r#"{"value": true}"#,
            r#"{"value": ["982734561"]}"#,
        ] {
            let e = serde_json::from_str::<SetSecretRequest>(body)
                .unwrap_err()
                .to_string();
            assert!(e.contains("must be a JSON string"), "{body}: {e}");
            for echoed in ["982734561", "9827345.61", "true"] {
                assert!(!e.contains(echoed), "{body}: {e}");
            }
        }
        let ok: SetSecretRequest = serde_json::from_str(r#"{"value": "hunter2"}"#).unwrap();
        assert_eq!(ok.value, "hunter2");
    }

    #[test]
    fn values() {
        assert!(validate_secret_value("").is_err());
        assert!(validate_secret_value("a\0b").is_err());
        assert!(validate_secret_value("ok").is_ok());
    }
}
