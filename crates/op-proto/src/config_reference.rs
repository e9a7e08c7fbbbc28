//! The configuration reference (docs/config.md), generated from the code.
//!
//! Each daemon describes its settings twice in code: a clap struct (flags, environment variables,
//! help text with `[default: ...]`) and a serde struct for its TOML file. The daemons turn the
//! clap side into [`ConfigKey`]s (`--print-config-reference`), [`serde_fields`] lists the file's
//! keys straight from the serde derive, and [`markdown`] renders the table. A test compares the
//! output with docs/config.md, so the reference cannot drift from the code. Pure functions only.

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// One setting as a person sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigKey {
    /// The key in the TOML file, or `None` for flag-only settings (`--config`).
    pub key: Option<String>,
    /// The long flag, without dashes.
    pub flag: String,
    /// The environment variable, if any.
    pub env: Option<String>,
    /// The default as the help text gives it (`[default: 30s]`), or `None`.
    pub default: Option<String>,
    /// The help text without the default.
    pub help: String,
}

impl ConfigKey {
    /// Builds a key from a flag's help text, splitting off its `[default: ...]`.
    pub fn from_help(flag: &str, env: Option<&str>, help: &str, file_keys: &[&str]) -> ConfigKey {
        let file_key = flag.replace('-', "_");
        let (help, default) = split_default(help);
        ConfigKey {
            key: file_keys.contains(&file_key.as_str()).then_some(file_key),
            flag: flag.to_string(),
            env: env.map(str::to_string),
            default,
            help,
        }
    }
}

/// `"Data directory [default: ./op-data]."` → (`"Data directory."`, `Some("./op-data")`).
pub fn split_default(help: &str) -> (String, Option<String>) {
    let one_line = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let Some(start) = one_line.find("[default: ") else {
        return (one_line, None);
    };
    // The default may itself hold brackets (`[default: $RUST_LOG, else info]`): match them.
    let mut depth = 0usize;
    let mut end = None;
    for (i, c) in one_line[start..].char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    end = Some(start + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let Some(end) = end else {
        return (one_line, None);
    };
    let default = one_line[start + "[default: ".len()..end].trim().to_string();
    let rest = format!("{}{}", one_line[..start].trim_end(), &one_line[end + 1..]);
    (rest.trim().to_string(), Some(default))
}

/// The field names of a struct deserialized by serde's derive (the keys its TOML file may
/// hold), read from the derive itself: serde hands them to `deserialize_struct`.
pub fn serde_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Capture(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("fields captured")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> Deserializer<'de> for &mut Capture {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut capture = Capture(None);
    let _ = T::deserialize(&mut capture);
    capture.0.unwrap_or(&[])
}

/// The markdown table of `keys`, one row per setting, in the given order.
pub fn markdown(keys: &[ConfigKey]) -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out = String::from(
        "| key (TOML file) | flag | environment | default | meaning |\n|---|---|---|---|---|\n",
    );
    for k in keys {
        out.push_str(&format!(
            "| {} | `--{}` | {} | {} | {} |\n",
            k.key
                .as_deref()
                .map_or_else(|| "(flag only)".to_string(), |k| format!("`{k}`")),
            k.flag,
            k.env
                .as_deref()
                .map_or_else(|| "".to_string(), |e| format!("`{e}`")),
            k.default
                .as_deref()
                .map_or_else(|| "none".to_string(), |d| format!("`{}`", cell(d))),
            cell(&k.help),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Example {
        data_dir: Option<String>,
        node_timeout: Option<String>,
    }

    #[test]
    fn fields_come_from_the_derive() {
        assert_eq!(serde_fields::<Example>(), &["data_dir", "node_timeout"]);
    }

    #[test]
    fn defaults_are_split_off() {
        assert_eq!(
            split_default("Log filter [default: $RUST_LOG, else info]."),
            (
                "Log filter.".to_string(),
                Some("$RUST_LOG, else info".to_string())
            )
        );
        assert_eq!(
            split_default("Heartbeats are flushed [default: 3s, at most\n half of node_timeout]."),
            (
                "Heartbeats are flushed.".to_string(),
                Some("3s, at most half of node_timeout".to_string())
            )
        );
        assert_eq!(split_default("Labels."), ("Labels.".to_string(), None));
        let k = ConfigKey::from_help(
            "node-timeout",
            Some("OP_NODE_TIMEOUT"),
            "T [default: 30s].",
            &["node_timeout"],
        );
        assert_eq!(k.key.as_deref(), Some("node_timeout"));
        assert!(
            markdown(&[k])
                .contains("| `node_timeout` | `--node-timeout` | `OP_NODE_TIMEOUT` | `30s` | T. |")
        );
    }
}
