//! Host selection: which machines a job runs on.
//!
//! An entry of `WhiteHosts`/`BlackHosts` (and of `--host`/`--exclude`, fan-out selections and
//! token policies: every place that selects hosts parses it here) is one of:
//! - an exact hostname, an IP address, a CIDR block, or a hostname glob (`web-*`);
//! - `label.KEY=VALUE`: the host's label KEY (its agent's own merged with the manager-set ones,
//!   the manager's value winning) equals VALUE, or matches it as a glob when VALUE has `*`/`?`;
//! - `fact.KEY=VALUE`: the host's probed fact KEY ([`crate::facts::FACT_KEYS`]) equals VALUE
//!   (ignoring ASCII case; a glob when VALUE has `*`/`?`), or `fact.KEY>=N` / `fact.KEY<=N`: it
//!   is a number and compares so with N (a decimal number). A host without that fact matches none.
//!
//! `=` is the only other comparison: there is no `>`, `<` or `!=`. A `=` value that starts with
//! `<`, `>`, `=` or `!` (`fact.cpus=>1`, `label.tier=!db`) is a comparison this grammar lacks,
//! read as equality with a value no host has, so [`HostPattern::parse`] refuses it and says what
//! to write. Stored data read through serde keeps its old meaning (DESIGN 13.7).
//!
//! Matching is never by substring: the seed's `strings.Contains` made `10.0.0.1` select
//! `10.0.0.11`, and that is exactly the bug this module exists to prevent.
//! Black beats white, an empty white list means every host, and labels narrow further.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::facts::Facts;

/// What a selector is matched against: one agent's identity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostIdentity {
    pub hostname: String,
    pub ips: Vec<IpAddr>,
    /// The agent's own labels merged with the manager-set ones (the manager's value wins).
    pub labels: BTreeMap<String, String>,
    /// The facts the host's agent probed; `None` until it reported any.
    pub facts: Option<Facts>,
}

/// One entry of a white or black list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPattern {
    text: String,
    kind: PatternKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PatternKind {
    Name(String),
    Ip(IpAddr),
    Cidr {
        net: IpAddr,
        prefix: u8,
    },
    Glob(String),
    /// `label.KEY=VALUE`
    Label {
        key: String,
        value: String,
    },
    /// `fact.KEY=VALUE`, `fact.KEY>=N`, `fact.KEY<=N`
    Fact {
        key: String,
        test: FactTest,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FactTest {
    /// Equal ignoring ASCII case, or a glob; lowercased.
    Eq(String),
    /// The f64's bits, so the kind stays `Eq` and `Hash`.
    AtLeast(u64),
    AtMost(u64),
}

/// Why a host entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("host entry {entry:?}: {reason}")]
pub struct HostPatternError {
    pub entry: String,
    pub reason: String,
}

impl HostPattern {
    /// Parses an entry as a person wrote it, applying every rule.
    pub fn parse(text: &str) -> Result<HostPattern, HostPatternError> {
        HostPattern::parse_with(text, true)
    }

    /// `strict`: also refuse an equality whose value looks like a comparison; off for stored
    /// data, which was accepted under the older rule.
    fn parse_with(text: &str, strict: bool) -> Result<HostPattern, HostPatternError> {
        let err = |reason: &str| HostPatternError {
            entry: text.to_string(),
            reason: reason.to_string(),
        };
        let t = text.trim();
        if t.is_empty() {
            return Err(err("must not be empty"));
        }
        let kind = if let Some(rest) = t.strip_prefix("label.") {
            parse_label(rest, strict).map_err(|r| err(&r))?
        } else if let Some(rest) = t.strip_prefix("fact.") {
            parse_fact(rest, strict).map_err(|r| err(&r))?
        } else if let Some((addr, prefix)) = t.split_once('/') {
            let net: IpAddr = addr
                .parse()
                .map_err(|_| err("is not a valid CIDR: the address part is not an IP address"))?;
            let max = if net.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = prefix.parse().ok().filter(|p| *p <= max).ok_or_else(|| {
                err(&format!(
                    "is not a valid CIDR: the prefix must be 0..={max}"
                ))
            })?;
            PatternKind::Cidr {
                net: mask(net, prefix),
                prefix,
            }
        } else if let Ok(ip) = t.parse::<IpAddr>() {
            PatternKind::Ip(ip)
        } else if t.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(err("is not a valid IP address"));
        } else if t.contains(['*', '?']) {
            if !t.chars().all(|c| hostname_char(c) || c == '*' || c == '?') {
                return Err(err(
                    "a glob may contain only hostname characters, '*' and '?'",
                ));
            }
            PatternKind::Glob(t.to_ascii_lowercase())
        } else {
            if t.len() > 253 || !t.chars().all(hostname_char) {
                return Err(err(
                    "is neither an IP, a CIDR, a glob nor a hostname ([A-Za-z0-9._-], at most 253 characters)",
                ));
            }
            PatternKind::Name(t.to_ascii_lowercase())
        };
        Ok(HostPattern {
            text: t.to_string(),
            kind,
        })
    }

    /// An entry read back from stored data that today's rules refuse (DESIGN 13.7: stored data
    /// outlives stricter rules). It matches only a host whose name equals it, ignoring case: never
    /// a substring, a range or a glob. In a white list it selects at most that host; in a black
    /// list it excludes only that host.
    pub fn exact_name(text: &str) -> HostPattern {
        HostPattern {
            text: text.to_string(),
            kind: PatternKind::Name(text.to_ascii_lowercase()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True for entries that name one host (a hostname or an IP), so "unknown host" can be reported.
    pub fn is_specific(&self) -> bool {
        matches!(self.kind, PatternKind::Name(_) | PatternKind::Ip(_))
    }

    pub fn matches(&self, host: &HostIdentity) -> bool {
        match &self.kind {
            PatternKind::Name(name) => host.hostname.eq_ignore_ascii_case(name),
            PatternKind::Ip(ip) => host.ips.contains(ip),
            PatternKind::Cidr { net, prefix } => host
                .ips
                .iter()
                .any(|ip| ip.is_ipv4() == net.is_ipv4() && mask(*ip, *prefix) == *net),
            PatternKind::Glob(glob) => glob_match(
                glob.as_bytes(),
                host.hostname.to_ascii_lowercase().as_bytes(),
            ),
            PatternKind::Label { key, value } => host.labels.get(key).is_some_and(|v| {
                if is_glob(value) {
                    glob_match(value.as_bytes(), v.as_bytes())
                } else {
                    v == value
                }
            }),
            PatternKind::Fact { key, test } => {
                let Some(have) = host.facts.as_ref().and_then(|f| f.get(key)) else {
                    return false;
                };
                match test {
                    FactTest::Eq(want) => {
                        let have = have.text().to_ascii_lowercase();
                        if is_glob(want) {
                            glob_match(want.as_bytes(), have.as_bytes())
                        } else {
                            have == *want
                        }
                    }
                    FactTest::AtLeast(n) => have.number().is_some_and(|h| h >= f64::from_bits(*n)),
                    FactTest::AtMost(n) => have.number().is_some_and(|h| h <= f64::from_bits(*n)),
                }
            }
        }
    }

    /// True for `label.` and `fact.` selectors.
    pub fn is_attribute(&self) -> bool {
        matches!(
            self.kind,
            PatternKind::Label { .. } | PatternKind::Fact { .. }
        )
    }
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?'])
}

fn printable(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// `KEY=VALUE` after `label.`: a key of printable characters without `=` or spaces, a value of
/// printable characters (empty matches a label set to the empty string).
fn parse_label(rest: &str, strict: bool) -> Result<PatternKind, String> {
    let Some((key, value)) = rest.split_once('=') else {
        return Err("a label selector is label.KEY=VALUE (e.g. label.role=db)".into());
    };
    if key.is_empty() {
        return Err("the label key is missing: write label.KEY=VALUE (e.g. label.role=db)".into());
    }
    if key.contains(char::is_whitespace) || !printable(key) || key.len() > 253 {
        return Err(format!(
            "label key {key:?} must be at most 253 printable characters without spaces"
        ));
    }
    if !printable(value) || value.len() > 253 {
        return Err("the label value must be at most 253 printable characters".into());
    }
    if strict && let Some(c) = comparison_char(value) {
        return Err(format!(
            "label.{key}={value}: a value starting with '{c}' looks like a comparison, but labels \
             compare only for equality (label.{key}=VALUE){}",
            negation_hint(c)
        ));
    }
    Ok(PatternKind::Label {
        key: key.to_string(),
        value: value.to_string(),
    })
}

/// `KEY=VALUE`, `KEY>=N` or `KEY<=N` after `fact.`, KEY one of [`crate::facts::FACT_KEYS`].
fn parse_fact(rest: &str, strict: bool) -> Result<PatternKind, String> {
    let usage = "a fact selector is fact.KEY=VALUE, fact.KEY>=N or fact.KEY<=N (e.g. fact.os=ubuntu, fact.cpus>=8)";
    let (key, op, value) = if let Some(i) = rest.find(">=") {
        (&rest[..i], ">=", &rest[i + 2..])
    } else if let Some(i) = rest.find("<=") {
        (&rest[..i], "<=", &rest[i + 2..])
    } else if let Some((k, v)) = rest.split_once('=') {
        (k, "=", v)
    } else {
        return Err(usage.into());
    };
    if key.is_empty() {
        return Err(format!("the fact key is missing: {usage}"));
    }
    let Some(numeric) = crate::facts::key_is_numeric(key) else {
        return Err(format!(
            "unknown fact {key:?}; the facts are {}",
            crate::facts::known_keys()
        ));
    };
    if value.trim().is_empty() {
        return Err(format!("fact.{key}{op} needs a value: {usage}"));
    }
    if !printable(value) || value.len() > 253 {
        return Err("the fact value must be at most 253 printable characters".into());
    }
    if strict
        && op == "="
        && let Some(c) = comparison_char(value)
    {
        let compare = if numeric {
            format!("fact.{key}>=N and fact.{key}<=N compare (there is no strict > or <)")
        } else {
            format!("fact {key} is not a number, so only fact.{key}=VALUE compares")
        };
        return Err(format!(
            "fact.{key}={value}: a value starting with '{c}' looks like a comparison, but '=' \
             means equal to; {compare}{}",
            negation_hint(c)
        ));
    }
    let test = match op {
        "=" => FactTest::Eq(value.to_ascii_lowercase()),
        _ => {
            if !numeric {
                return Err(format!(
                    "fact {key} is not a number; compare it with fact.{key}=VALUE"
                ));
            }
            let n = value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .ok_or_else(|| {
                    format!("fact.{key}{op} needs a number (e.g. fact.{key}{op}8), found {value:?}")
                })?;
            if op == ">=" {
                FactTest::AtLeast(n.to_bits())
            } else {
                FactTest::AtMost(n.to_bits())
            }
        }
    };
    Ok(PatternKind::Fact {
        key: key.to_string(),
        test,
    })
}

/// The comparison character a `=` value starts with, if any (see the module doc).
fn comparison_char(value: &str) -> Option<char> {
    value
        .trim_start()
        .chars()
        .next()
        .filter(|c| matches!(c, '<' | '>' | '=' | '!'))
}

fn negation_hint(c: char) -> &'static str {
    if c == '!' {
        "; to leave hosts out, put the selector in BlackHosts (or --exclude)"
    } else {
        ""
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        // Stored jobs, invocations and policies come this way: read them under the rules they
        // were accepted by. Input is checked with `parse` where it enters (task files, flags,
        // `Selection::from_request`).
        HostPattern::parse_with(&text, false).map_err(serde::de::Error::custom)
    }
}

fn hostname_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

/// `*` matches any run of characters, `?` exactly one. Iterative, so no input can blow the stack.
/// Also the job globs of notification rules (`events.rs`).
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A job's host selection.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostSelector {
    #[serde(default)]
    pub white: Vec<HostPattern>,
    #[serde(default)]
    pub black: Vec<HostPattern>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl HostSelector {
    /// Every host.
    pub fn all() -> HostSelector {
        HostSelector::default()
    }

    pub fn matches(&self, host: &HostIdentity) -> bool {
        if self.black.iter().any(|p| p.matches(host)) {
            return false;
        }
        if !self.white.is_empty() && !self.white.iter().any(|p| p.matches(host)) {
            return false;
        }
        self.labels
            .iter()
            .all(|(k, v)| host.labels.get(k) == Some(v))
    }

    /// The specific white entries (hostnames and IPs) that match none of `hosts`.
    pub fn unknown_entries<'a>(&'a self, hosts: &[HostIdentity]) -> Vec<&'a HostPattern> {
        self.white
            .iter()
            .filter(|p| p.is_specific() && !hosts.iter().any(|h| p.matches(h)))
            .collect()
    }
}

/// The entries of a host flag given one or more times (`--host a,b --host c`), each parsed,
/// with the text it was parsed from. A value that names no host (`--host ""`, `--host ,`) is an
/// error rather than nothing: a script passing an empty variable must not widen the selection
/// to every host the command would pick without the flag. The error names the flag.
pub fn host_flag_entries<'a>(
    texts: &'a [String],
    flag: &str,
) -> Result<Vec<(&'a str, HostPattern)>, String> {
    let mut out = Vec::new();
    for t in texts {
        let entries: Vec<&str> = t.split(',').map(str::trim).collect();
        if entries.iter().all(|e| e.is_empty()) {
            return Err(format!("{flag} needs a host: got {t:?}"));
        }
        for e in entries.into_iter().filter(|e| !e.is_empty()) {
            let p = HostPattern::parse(e).map_err(|err| format!("{flag} {err}"))?;
            out.push((e, p));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, ips: &[&str]) -> HostIdentity {
        HostIdentity {
            hostname: name.into(),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            labels: BTreeMap::new(),
            facts: None,
        }
    }

    #[test]
    fn a_host_flag_that_names_no_host_is_refused() {
        let texts = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for bad in [&[""][..], &[" , "], &["web-01", ""]] {
            let err = host_flag_entries(&texts(bad), "--host").unwrap_err();
            assert!(err.starts_with("--host needs a host"), "{bad:?}: {err}");
        }
        let ok = texts(&["web-01, db-*", "10.0.0.0/8"]);
        let got: Vec<&str> = host_flag_entries(&ok, "--exclude")
            .unwrap()
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(got, ["web-01", "db-*", "10.0.0.0/8"]);
        let err = host_flag_entries(&texts(&["label.=x"]), "--exclude").unwrap_err();
        assert!(err.starts_with("--exclude "), "{err}");
    }

    #[test]
    fn label_and_fact_selectors() {
        let mut h = host("db-1", &["10.0.0.5"]);
        h.labels.insert("role".into(), "db".into());
        h.labels.insert("zone".into(), "eu-west-1".into());
        assert!(pat("label.role=db").matches(&h));
        assert!(!pat("label.role=DB").matches(&h), "label values are exact");
        assert!(!pat("label.role=web").matches(&h));
        assert!(!pat("label.rack=db").matches(&h));
        assert!(pat("label.zone=eu-*").matches(&h));
        assert!(!pat("label.zone=us-*").matches(&h));
        assert!(!pat("fact.os=ubuntu").matches(&h), "no facts reported yet");
        assert!(!pat("fact.disks>=0").matches(&h), "no facts reported yet");
        h.facts = Some(crate::facts::Facts {
            os: "ubuntu".into(),
            os_version: "22.04".into(),
            cpus: Some(8),
            memory_mb: Some(16_000),
            cpu_model: "Intel(R) Xeon(R) Gold".into(),
            ..Default::default()
        });
        assert!(pat("fact.os=ubuntu").matches(&h));
        assert!(pat("fact.os=Ubuntu").matches(&h), "fact values ignore case");
        assert!(!pat("fact.os=debian").matches(&h));
        assert!(pat("fact.cpus>=8").matches(&h));
        assert!(!pat("fact.cpus>=9").matches(&h));
        assert!(pat("fact.cpus<=8").matches(&h));
        assert!(!pat("fact.cpus<=7.5").matches(&h));
        assert!(pat("fact.cpus=8").matches(&h));
        assert!(pat("fact.memory_mb>=15999.5").matches(&h));
        assert!(pat("fact.os_version>=20.04").matches(&h));
        assert!(!pat("fact.os_version<=20.04").matches(&h));
        assert!(pat("fact.cpu_model=*xeon*").matches(&h));
        assert!(!pat("fact.cpus>=100000").matches(&h));
        assert!(!pat("fact.kernel=6.1").matches(&h), "kernel was not probed");
        assert!(pat("fact.disks<=0").matches(&h));
        for p in ["label.role=db", "fact.cpus>=8", "fact.os=ubuntu"] {
            assert!(pat(p).is_attribute() && !pat(p).is_specific(), "{p}");
            assert_eq!(pat(p).as_str(), p);
        }
        // In a selector: white by fact, black by label.
        let sel = HostSelector {
            white: vec![pat("fact.os=ubuntu")],
            black: vec![pat("label.role=web")],
            labels: BTreeMap::new(),
        };
        assert!(sel.matches(&h));
        h.labels.insert("role".into(), "web".into());
        assert!(!sel.matches(&h));
    }

    #[test]
    fn bad_selectors_are_refused_with_a_reason() {
        for (bad, says) in [
            ("label.=x", "key is missing"),
            ("label.role", "label.KEY=VALUE"),
            ("label.ro le=x", "without spaces"),
            ("fact.", "fact selector is"),
            ("fact.=x", "key is missing"),
            ("fact.cpus>=abc", "needs a number"),
            ("fact.cpus<=", "needs a value"),
            ("fact.os=", "needs a value"),
            ("fact.os>=3", "not a number"),
            ("fact.colour=red", "unknown fact"),
            ("fact.cpus", "fact selector is"),
            ("fact.cpus>=inf", "needs a number"),
            (
                "fact.cpus=>1",
                "fact.cpus=>1: a value starting with '>' looks like a comparison, but '=' means \
                 equal to; fact.cpus>=N and fact.cpus<=N compare (there is no strict > or <)",
            ),
            ("fact.cpus=<8", "starting with '<'"),
            ("fact.os==ubuntu", "only fact.os=VALUE compares"),
            ("fact.os=!ubuntu", "put the selector in BlackHosts"),
            (
                "label.tier=>2",
                "labels compare only for equality (label.tier=VALUE)",
            ),
        ] {
            let e = HostPattern::parse(bad).expect_err(bad);
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
        // Serde goes through the same parser: a bad selector in JSON is an error.
        assert!(serde_json::from_str::<HostPattern>(r#""fact.cpus>=abc""#).is_err());
        // Stored data keeps the meaning it was accepted with: equality with ">1".
        let old: HostPattern = serde_json::from_str(r#""fact.cpus=>1""#).unwrap();
        assert_eq!(old.as_str(), "fact.cpus=>1");
        let p: HostPattern = serde_json::from_str(r#""label.role=db""#).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), r#""label.role=db""#);
    }

    fn pat(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap()
    }

    #[test]
    fn ip_is_never_a_substring_match() {
        let h11 = host("a", &["10.0.0.11"]);
        assert!(!pat("10.0.0.1").matches(&h11));
        assert!(pat("10.0.0.11").matches(&h11));
        let h1 = host("a", &["10.0.0.1"]);
        assert!(!pat("10.0.0.11").matches(&h1));
    }

    #[test]
    fn cidr() {
        let p = pat("10.1.0.0/16");
        assert!(p.matches(&host("a", &["10.1.200.3"])));
        assert!(!p.matches(&host("a", &["10.2.0.1"])));
        assert!(pat("0.0.0.0/0").matches(&host("a", &["1.2.3.4"])));
        assert!(pat("fd00::/8").matches(&host("a", &["fd12::1"])));
        assert!(!pat("fd00::/8").matches(&host("a", &["10.0.0.1"])));
        for bad in ["10.0.0.0/33", "10.0.0/8", "x/8", "10.0.0.0/", "::/129"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn glob_and_names() {
        let h = host("Web-01.dc1", &[]);
        assert!(pat("web-*").matches(&h));
        assert!(pat("web-0?.dc1").matches(&h));
        assert!(!pat("web-0?").matches(&h));
        assert!(pat("web-01.DC1").matches(&h));
        assert!(!pat("web").matches(&h));
        assert!(glob_match(b"*a*b*", b"xxaxxbxx"));
        assert!(!glob_match(b"*a*b", b"xxaxxbxx"));
        assert!(HostPattern::parse("10.0.0.300").is_err());
        assert!(HostPattern::parse("bad host").is_err());
    }

    #[test]
    fn black_beats_white_and_labels_narrow() {
        let mut h = host("db-1", &["10.0.0.5"]);
        h.labels.insert("role".into(), "db".into());
        let mut sel = HostSelector {
            white: vec![pat("10.0.0.0/24")],
            black: vec![pat("db-1")],
            labels: BTreeMap::new(),
        };
        assert!(!sel.matches(&h));
        sel.black.clear();
        assert!(sel.matches(&h));
        sel.labels.insert("role".into(), "web".into());
        assert!(!sel.matches(&h));
        sel.labels.insert("role".into(), "db".into());
        assert!(sel.matches(&h));
        assert!(HostSelector::all().matches(&h));
    }

    #[test]
    fn unknown_entries() {
        let sel = HostSelector {
            white: vec![pat("10.0.0.5"), pat("10.0.0.9"), pat("web-*")],
            ..HostSelector::default()
        };
        let hosts = [host("db-1", &["10.0.0.5"])];
        let unknown: Vec<_> = sel
            .unknown_entries(&hosts)
            .iter()
            .map(|p| p.as_str())
            .collect();
        assert_eq!(unknown, ["10.0.0.9"]);
    }
}
