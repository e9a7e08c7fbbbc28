//! Parameter substitution for invoked jobs (DESIGN.md section 5.4).
//!
//! A job's Command may contain placeholders like `{host}`. When the job is invoked with parameters,
//! each placeholder is replaced by a *reference* to an environment variable `OP_PARAM_HOST` that holds
//! the value, never by the value itself. The shell expands a variable reference exactly once and
//! never re-parses the result, so no value (quotes, `$( )`, backticks, newlines) can become shell code.
//!
//! The reference must fit the quoting context the placeholder sits in, because the seed's own
//! template is `--host '{host}'`:
//! - unquoted `{x}` becomes `"${OP_PARAM_X}"`;
//! - inside `'...'` it becomes `'"${OP_PARAM_X}"'` (close the quote, expand, reopen);
//! - inside `"..."` it becomes `${OP_PARAM_X}`;
//! - inside `$'...'` it becomes `'"${OP_PARAM_X}"$'`.
//!
//! In every context the value arrives as exactly the characters it has, inside one word.
//! `${name}` (a shell variable) is never a placeholder. Scheduled runs (cron and once-jobs) carry no
//! parameters and run their Command as written.

use std::collections::BTreeMap;

use crate::job::validate_param_name;

/// Most parameters one invocation may carry.
pub const MAX_PARAMS: usize = 64;
/// Longest accepted parameter value, in bytes.
pub const MAX_PARAM_VALUE_LEN: usize = 32 * 1024;

/// The prefix of the environment variables that carry parameter values.
pub const ENV_PREFIX: &str = "OP_PARAM_";

/// Why an invocation's parameters were refused. Every variant is a client error (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("parameter {0:?} has no value; the command uses {{{0}}}")]
    Missing(String),
    #[error("parameter {name:?} is not declared by the job (declared: {declared})")]
    Undeclared { name: String, declared: String },
    #[error("{0}")]
    BadName(String),
    #[error("parameters {0:?} and {1:?} differ only in case")]
    CaseCollision(String, String),
    #[error("parameter {0:?} is longer than {MAX_PARAM_VALUE_LEN} bytes")]
    TooLong(String),
    #[error("parameter {0:?} contains a NUL character")]
    Nul(String),
    #[error("{0} parameters given; at most {MAX_PARAMS} are allowed")]
    TooMany(usize),
}

/// A command ready to run: the rewritten text and the variables it refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Substituted {
    pub command: String,
    /// `(OP_PARAM_NAME, value)` for every parameter given.
    pub env: Vec<(String, String)>,
}

/// The environment variable that carries parameter `name`.
pub fn env_name(name: &str) -> String {
    format!("{ENV_PREFIX}{}", name.to_ascii_uppercase())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Unquoted,
    Single,
    Double,
    AnsiC,
    /// Inside `$( ... )`, with its own paren depth; quoting starts afresh.
    Subst(u32),
    /// Inside backticks.
    Backtick,
}

/// The placeholder names a command uses, in order of first use. With `declared` non-empty only
/// those names count as placeholders; otherwise every `{identifier}` does.
pub fn placeholders(command: &str, declared: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    walk(command, declared, |name, _| {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            names.push(name.to_string());
        }
        String::new()
    });
    names
}

/// Rewrites `command` for the given values; see the module docs for the rules.
pub fn substitute(
    command: &str,
    declared: &[String],
    values: &BTreeMap<String, String>,
) -> Result<Substituted, ParamError> {
    if values.len() > MAX_PARAMS {
        return Err(ParamError::TooMany(values.len()));
    }
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for (name, value) in values {
        validate_param_name(name).map_err(ParamError::BadName)?;
        if let Some(other) = seen.insert(name.to_ascii_uppercase(), name) {
            return Err(ParamError::CaseCollision(other.to_string(), name.clone()));
        }
        if !declared.is_empty() && !declared.iter().any(|d| d.eq_ignore_ascii_case(name)) {
            return Err(ParamError::Undeclared {
                name: name.clone(),
                declared: declared.join(", "),
            });
        }
        if value.len() > MAX_PARAM_VALUE_LEN {
            return Err(ParamError::TooLong(name.clone()));
        }
        if value.contains('\0') {
            return Err(ParamError::Nul(name.clone()));
        }
    }
    for name in placeholders(command, declared) {
        if !values.keys().any(|k| k.eq_ignore_ascii_case(&name)) {
            return Err(ParamError::Missing(name));
        }
    }
    let rewritten = walk(command, declared, |name, ctx| {
        let var = env_name(name);
        match ctx {
            Ctx::Single => format!("'\"${{{var}}}\"'"),
            Ctx::AnsiC => format!("'\"${{{var}}}\"$'"),
            Ctx::Double => format!("${{{var}}}"),
            Ctx::Unquoted | Ctx::Subst(_) | Ctx::Backtick => format!("\"${{{var}}}\""),
        }
    });
    let env = values
        .iter()
        .map(|(k, v)| (env_name(k), v.clone()))
        .collect();
    Ok(Substituted {
        command: rewritten,
        env,
    })
}

/// Walks `command` tracking the shell quoting context and calls `replace` for each placeholder.
/// Returns the command with every placeholder replaced by what `replace` returned.
fn walk(
    command: &str,
    declared: &[String],
    mut replace: impl FnMut(&str, Ctx) -> String,
) -> String {
    let chars: Vec<char> = command.chars().collect();
    let mut out = String::with_capacity(command.len() + 32);
    let mut stack: Vec<Ctx> = vec![Ctx::Unquoted];
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let ctx = *stack.last().unwrap_or(&Ctx::Unquoted);
        let next = chars.get(i + 1).copied();
        // A placeholder: `{ident}`, not part of `${...}`.
        if c == '{'
            && (i == 0 || chars[i - 1] != '$')
            && let Some((name, len)) = placeholder_at(&chars[i..])
        {
            let counts =
                declared.is_empty() || declared.iter().any(|d| d.eq_ignore_ascii_case(&name));
            if counts {
                out.push_str(&replace(&name, ctx));
                i += len;
                continue;
            }
        }
        out.push(c);
        i += 1;
        match ctx {
            Ctx::Single => {
                if c == '\'' {
                    stack.pop();
                }
            }
            Ctx::AnsiC => match c {
                '\\' => {
                    if let Some(n) = next {
                        out.push(n);
                        i += 1;
                    }
                }
                '\'' => {
                    stack.pop();
                }
                _ => {}
            },
            Ctx::Double => match c {
                '\\' => {
                    if let Some(n) = next {
                        out.push(n);
                        i += 1;
                    }
                }
                '"' => {
                    stack.pop();
                }
                '$' if next == Some('(') => {
                    out.push('(');
                    i += 1;
                    stack.push(Ctx::Subst(1));
                }
                '`' => stack.push(Ctx::Backtick),
                _ => {}
            },
            Ctx::Unquoted | Ctx::Subst(_) | Ctx::Backtick => match c {
                '\\' => {
                    if let Some(n) = next {
                        out.push(n);
                        i += 1;
                    }
                }
                '\'' => stack.push(Ctx::Single),
                '"' => stack.push(Ctx::Double),
                '$' if next == Some('\'') => {
                    out.push('\'');
                    i += 1;
                    stack.push(Ctx::AnsiC);
                }
                '$' if next == Some('(') => {
                    out.push('(');
                    i += 1;
                    stack.push(Ctx::Subst(1));
                }
                '`' if ctx == Ctx::Backtick => {
                    stack.pop();
                }
                '`' => stack.push(Ctx::Backtick),
                '(' => {
                    if let Some(Ctx::Subst(depth)) = stack.last_mut() {
                        *depth += 1;
                    }
                }
                ')' => {
                    if let Some(Ctx::Subst(depth)) = stack.last_mut() {
                        *depth -= 1;
                        if *depth == 0 {
                            stack.pop();
                        }
                    }
                }
                _ => {}
            },
        }
        if stack.is_empty() {
            stack.push(Ctx::Unquoted);
        }
    }
    out
}

/// If `chars` starts with `{identifier}`, the identifier and the placeholder's length.
fn placeholder_at(chars: &[char]) -> Option<(String, usize)> {
    let end = chars.iter().position(|&c| c == '}')?;
    let name: String = chars[1..end].iter().collect();
    validate_param_name(&name).ok()?;
    Some((name, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn seed_template() {
        let s = substitute(
            "python /data/op-agent/src/apiTest.py --host '{host}' --port '{port}'",
            &[],
            &vals(&[("host", "192.168.1.1"), ("port", "3306")]),
        )
        .unwrap();
        assert_eq!(
            s.command,
            r#"python /data/op-agent/src/apiTest.py --host ''"${OP_PARAM_HOST}"'' --port ''"${OP_PARAM_PORT}"''"#
        );
        assert_eq!(
            s.env,
            vec![
                ("OP_PARAM_HOST".to_string(), "192.168.1.1".to_string()),
                ("OP_PARAM_PORT".to_string(), "3306".to_string())
            ]
        );
    }

    #[test]
    fn contexts() {
        let v = vals(&[("x", "v")]);
        assert_eq!(
            substitute("echo {x}", &[], &v).unwrap().command,
            r#"echo "${OP_PARAM_X}""#
        );
        assert_eq!(
            substitute(r#"echo "a{x}b""#, &[], &v).unwrap().command,
            r#"echo "a${OP_PARAM_X}b""#
        );
        assert_eq!(
            substitute("echo $'a{x}'", &[], &v).unwrap().command,
            r#"echo $'a'"${OP_PARAM_X}"$''"#
        );
        assert_eq!(
            substitute(r#"echo "$(echo '{x}')""#, &[], &v)
                .unwrap()
                .command,
            r#"echo "$(echo ''"${OP_PARAM_X}"'')""#
        );
        // Escaped quotes do not open a context.
        assert_eq!(
            substitute(r"echo \'{x}", &[], &v).unwrap().command,
            r#"echo \'"${OP_PARAM_X}""#
        );
    }

    #[test]
    fn shell_variables_and_braces_are_not_placeholders() {
        let cmd = r#"echo ${HOME} {} {a,b} awk '{print $1}' "${x}""#;
        assert!(placeholders(cmd, &[]).is_empty());
        assert_eq!(substitute(cmd, &[], &BTreeMap::new()).unwrap().command, cmd);
    }

    #[test]
    fn missing_and_undeclared() {
        assert_eq!(
            substitute("echo {a} {b}", &[], &vals(&[("a", "1")])),
            Err(ParamError::Missing("b".into()))
        );
        let declared = vec!["a".to_string()];
        assert!(matches!(
            substitute("echo {a}", &declared, &vals(&[("a", "1"), ("z", "2")])),
            Err(ParamError::Undeclared { .. })
        ));
        // With declared params, other braces stay literal.
        assert_eq!(
            substitute("echo {a} {other}", &declared, &vals(&[("a", "1")]))
                .unwrap()
                .command,
            r#"echo "${OP_PARAM_A}" {other}"#
        );
        assert!(matches!(
            substitute("echo", &[], &vals(&[("a", "1"), ("A", "2")])),
            Err(ParamError::CaseCollision(..))
        ));
        assert!(matches!(
            substitute("echo", &[], &vals(&[("a", "\0")])),
            Err(ParamError::Nul(_))
        ));
        assert!(matches!(
            substitute("echo", &[], &vals(&[("1a", "")])),
            Err(ParamError::BadName(_))
        ));
    }
}
