//! Host selection: which machines a job runs on.
//!
//! An entry of `WhiteHosts`/`BlackHosts` is an exact hostname, an IP address, a CIDR block, or a
//! hostname glob (`web-*`). Matching is never by substring: the seed's `strings.Contains` made
//! `10.0.0.1` select `10.0.0.11`, and that is exactly the bug this module exists to prevent.
//! Black beats white, an empty white list means every host, and labels narrow further.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a selector is matched against: one agent's identity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostIdentity {
    pub hostname: String,
    pub ips: Vec<IpAddr>,
    pub labels: BTreeMap<String, String>,
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
    Cidr { net: IpAddr, prefix: u8 },
    Glob(String),
}

/// Why a host entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("host entry {entry:?}: {reason}")]
pub struct HostPatternError {
    pub entry: String,
    pub reason: String,
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<HostPattern, HostPatternError> {
        let err = |reason: &str| HostPatternError {
            entry: text.to_string(),
            reason: reason.to_string(),
        };
        let t = text.trim();
        if t.is_empty() {
            return Err(err("must not be empty"));
        }
        let kind = if let Some((addr, prefix)) = t.split_once('/') {
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
        }
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
        HostPattern::parse(&text).map_err(serde::de::Error::custom)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, ips: &[&str]) -> HostIdentity {
        HostIdentity {
            hostname: name.into(),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            labels: BTreeMap::new(),
        }
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
