//! Token policies: what a token may do beside its scope (docs/security.md, "Token policies").
//!
//! A policy narrows a token; it never widens its scope. It lists job name globs (the jobs the
//! token may see and act on), host selectors (the hosts it may target, in the grammar of
//! [`crate::hosts::HostPattern`]) and verbs. An empty list of jobs or hosts means "all"; a policy
//! that lists no verbs gets [`Verb::DEFAULT`] (every verb but `secrets` and `tokens`).
//!
//! [`TokenPolicy`] is the wire and stored form (plain strings, checked strictly when a token is
//! created); [`Policy`] is the checked form the manager decides with.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::hosts::{HostIdentity, HostPattern, HostSelector, glob_match};

/// Token scopes (DESIGN.md section 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read only.
    Viewer,
    /// Jobs, runs, packages.
    Operator,
    /// Everything, including tokens and cluster membership.
    Admin,
    /// The agent protocol only.
    Agent,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Viewer => "viewer",
            Scope::Operator => "operator",
            Scope::Admin => "admin",
            Scope::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Some(match s {
            "viewer" => Scope::Viewer,
            "operator" => Scope::Operator,
            "admin" => Scope::Admin,
            "agent" => Scope::Agent,
            _ => return None,
        })
    }

    /// True when a token of this scope may read fleet data (nodes, jobs, runs, packages).
    pub fn can_read(self) -> bool {
        matches!(self, Scope::Viewer | Scope::Operator | Scope::Admin)
    }

    /// True when a token of this scope may change jobs, run them and manage packages.
    pub fn can_operate(self) -> bool {
        matches!(self, Scope::Operator | Scope::Admin)
    }
}

/// What a request does, for a policy's `verbs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    Read,
    Save,
    Delete,
    Run,
    Exec,
    Upload,
    Rollback,
    Rollout,
    Pause,
    Label,
    Notify,
    Upgrade,
    Secrets,
    Tokens,
}

impl Verb {
    pub const ALL: [Verb; 14] = [
        Verb::Read,
        Verb::Save,
        Verb::Delete,
        Verb::Run,
        Verb::Exec,
        Verb::Upload,
        Verb::Rollback,
        Verb::Rollout,
        Verb::Pause,
        Verb::Label,
        Verb::Notify,
        Verb::Upgrade,
        Verb::Secrets,
        Verb::Tokens,
    ];

    /// The verbs of a policy that names none: all but `secrets` and `tokens`, which are granted
    /// only by name (a token that may make tokens could make itself a broader one).
    pub const DEFAULT: [Verb; 12] = [
        Verb::Read,
        Verb::Save,
        Verb::Delete,
        Verb::Run,
        Verb::Exec,
        Verb::Upload,
        Verb::Rollback,
        Verb::Rollout,
        Verb::Pause,
        Verb::Label,
        Verb::Notify,
        Verb::Upgrade,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Read => "read",
            Verb::Save => "save",
            Verb::Delete => "delete",
            Verb::Run => "run",
            Verb::Exec => "exec",
            Verb::Upload => "upload",
            Verb::Rollback => "rollback",
            Verb::Rollout => "rollout",
            Verb::Pause => "pause",
            Verb::Label => "label",
            Verb::Notify => "notify",
            Verb::Upgrade => "upgrade",
            Verb::Secrets => "secrets",
            Verb::Tokens => "tokens",
        }
    }

    pub fn parse(s: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// The least scope whose requests ever need this verb, as the manager's API guard decides
    /// (`required_access` beside `required_verb`): a viewer only reads; notification rules and
    /// tokens are admin's; an operator may list secret names. A policy verb that its token's
    /// scope cannot use would grant nothing, so a token naming one is refused.
    pub fn least_scope(self) -> Scope {
        match self {
            Verb::Read => Scope::Viewer,
            Verb::Notify | Verb::Tokens => Scope::Admin,
            _ => Scope::Operator,
        }
    }

    /// True when a token of `scope` can ever use this verb.
    pub fn granted_by(self, scope: Scope) -> bool {
        match scope {
            Scope::Agent => false,
            Scope::Viewer => self.least_scope() == Scope::Viewer,
            Scope::Operator => self.least_scope() != Scope::Admin,
            Scope::Admin => true,
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token's policy as sent and stored: job globs, host selectors and verbs, as typed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenPolicy {
    /// Job name globs (`*` any run of characters, `?` one); empty = every job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<String>,
    /// Host selectors (names, IPs, CIDRs, globs, and whatever else `HostPattern` reads); empty =
    /// every host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Verbs; empty = [`Verb::DEFAULT`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<String>,
}

impl TokenPolicy {
    /// A one-line summary for listings: `jobs=a-*,b hosts=node-1 verbs=read,run`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.jobs.is_empty() {
            parts.push(format!("jobs={}", self.jobs.join(",")));
        }
        if !self.hosts.is_empty() {
            parts.push(format!("hosts={}", self.hosts.join(",")));
        }
        let verbs = if self.verbs.is_empty() {
            "default".to_string()
        } else {
            self.verbs.join(",")
        };
        parts.push(format!("verbs={verbs}"));
        parts.join(" ")
    }
}

/// A checked policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    jobs: Vec<String>,
    hosts: Vec<HostPattern>,
    verbs: BTreeSet<Verb>,
}

/// Checks a job name glob: the job name characters plus `*` and `?`.
pub fn validate_job_glob(glob: &str) -> Result<(), String> {
    if glob.is_empty() {
        return Err("a job glob must not be empty".into());
    }
    if glob.len() > 128 {
        return Err(format!("job glob {glob:?} is longer than 128 characters"));
    }
    if let Some(bad) = glob
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*' | '?')))
    {
        return Err(format!(
            "job glob {glob:?} contains {bad:?}; only letters, digits, '.', '_', '-', '*' and '?' are allowed"
        ));
    }
    Ok(())
}

impl Policy {
    /// The strict reading, for a token being created: every glob, host selector and verb must
    /// be valid, else the reason (the manager answers 400 with it).
    pub fn check(p: &TokenPolicy) -> Result<Policy, String> {
        Policy::check_for(p, Scope::Admin)
    }

    /// [`Policy::check`] for a token of `scope`: a verb the scope can never use is refused too,
    /// since a `--scope viewer --verbs save` token would otherwise be made and do nothing.
    pub fn check_for(p: &TokenPolicy, scope: Scope) -> Result<Policy, String> {
        for g in &p.jobs {
            validate_job_glob(g)?;
        }
        let hosts = p
            .hosts
            .iter()
            .map(|h| HostPattern::parse(h).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut verbs = BTreeSet::new();
        for v in &p.verbs {
            let verb = Verb::parse(v.trim()).ok_or_else(|| {
                format!(
                    "unknown verb {v:?}; use {}",
                    Verb::ALL.map(Verb::as_str).join(", ")
                )
            })?;
            if !verb.granted_by(scope) {
                let usable: Vec<&str> = Verb::ALL
                    .into_iter()
                    .filter(|v| v.granted_by(scope))
                    .map(Verb::as_str)
                    .collect();
                return Err(format!(
                    "verb {:?} needs an {} token; a {} token can use only {}",
                    verb.as_str(),
                    verb.least_scope().as_str(),
                    scope.as_str(),
                    usable.join(", ")
                ));
            }
            verbs.insert(verb);
        }
        if verbs.is_empty() {
            verbs.extend(Verb::DEFAULT);
        }
        Ok(Policy {
            jobs: p.jobs.clone(),
            hosts,
            verbs,
        })
    }

    /// The reading of a stored policy (DESIGN 13.7: stored data outlives stricter rules). It
    /// never grants more than the strict one: an unknown verb grants nothing, a host entry
    /// today's grammar refuses matches only the host of exactly that name, a job glob is
    /// matched as written.
    pub fn stored(p: &TokenPolicy) -> Policy {
        let mut verbs: BTreeSet<Verb> = p.verbs.iter().filter_map(|v| Verb::parse(v)).collect();
        if p.verbs.is_empty() {
            verbs.extend(Verb::DEFAULT);
        }
        Policy {
            jobs: p.jobs.clone(),
            hosts: p
                .hosts
                .iter()
                .map(|h| HostPattern::parse(h).unwrap_or_else(|_| HostPattern::exact_name(h)))
                .collect(),
            verbs,
        }
    }

    pub fn allows(&self, verb: Verb) -> bool {
        self.verbs.contains(&verb)
    }

    pub fn verbs(&self) -> impl Iterator<Item = Verb> + '_ {
        self.verbs.iter().copied()
    }

    /// True when the token restricts jobs at all.
    pub fn restricts_jobs(&self) -> bool {
        !self.jobs.is_empty()
    }

    /// True when the token restricts hosts at all.
    pub fn restricts_hosts(&self) -> bool {
        !self.hosts.is_empty()
    }

    /// May the token see and act on the job called `name`? Never, for a token limited to some
    /// jobs, the pseudo-job of ad-hoc commands ([`crate::invoke::ADHOC_JOB`]): every `exec`
    /// runs under that one name, so a glob such as `a*` would otherwise reach everyone's
    /// execs (their invocations, runs, output and retries). Such a token sees the execs it
    /// started itself through their invocations.
    pub fn sees_job(&self, name: &str) -> bool {
        self.jobs.is_empty()
            || (name != crate::invoke::ADHOC_JOB
                && self
                    .jobs
                    .iter()
                    .any(|g| glob_match(g.as_bytes(), name.as_bytes())))
    }

    /// May the token target `host`?
    pub fn reaches_host(&self, host: &HostIdentity) -> bool {
        self.hosts.is_empty() || self.hosts.iter().any(|p| p.matches(host))
    }

    /// Checks that every host `sel` can ever select is one this token may target; else names
    /// what reaches outside. Decided from the selection's text, not from today's fleet, so a
    /// host that joins later cannot widen a saved job: each `WhiteHosts` entry must be one of
    /// the policy's entries as written, or a hostname or IP that a policy entry matches (given
    /// the job's `Labels`); a selection with no `WhiteHosts` must be confined by its `Labels`
    /// alone (a policy entry such as `label.team=a` matching any host carrying them). A job that
    /// selects every host reaches outside any host policy.
    pub fn confines(&self, sel: &HostSelector) -> Result<(), String> {
        if self.hosts.is_empty() {
            return Ok(());
        }
        let allowed = self
            .hosts
            .iter()
            .map(|p| p.as_str().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if sel.white.is_empty() {
            let bare = HostIdentity {
                labels: sel.labels.clone(),
                ..HostIdentity::default()
            };
            // A glob `*` matches an empty hostname; `label.` entries match on the labels.
            if !sel.labels.is_empty() && self.hosts.iter().any(|p| p.matches(&bare)) {
                return Ok(());
            }
            return Err(format!(
                "the job selects every host{}; this token may target only: {allowed}",
                if sel.labels.is_empty() {
                    ""
                } else {
                    " with its labels"
                }
            ));
        }
        for entry in &sel.white {
            let same = self
                .hosts
                .iter()
                .any(|p| p.as_str().eq_ignore_ascii_case(entry.as_str()));
            if same {
                continue;
            }
            let inside = entry.is_specific() && {
                let text = entry.as_str();
                let id = match text.parse::<std::net::IpAddr>() {
                    Ok(ip) => HostIdentity {
                        ips: vec![ip],
                        labels: sel.labels.clone(),
                        ..HostIdentity::default()
                    },
                    Err(_) => HostIdentity {
                        hostname: text.to_string(),
                        labels: sel.labels.clone(),
                        ..HostIdentity::default()
                    },
                };
                self.hosts.iter().any(|p| p.matches(&id))
            };
            if !inside {
                return Err(format!(
                    "WhiteHosts entry {:?} reaches outside this token's hosts ({allowed})",
                    entry.as_str()
                ));
            }
        }
        Ok(())
    }

    /// True when `other` grants nothing this policy does not (for a policy token that makes
    /// tokens): its verbs are a subset, and its job and host lists name only entries of ours
    /// (as written) when ours restricts them.
    pub fn covers(&self, other: &Policy) -> Result<(), String> {
        if let Some(v) = other.verbs.iter().find(|v| !self.verbs.contains(v)) {
            return Err(format!("verb {v} is not granted to this token"));
        }
        if !self.jobs.is_empty() {
            if other.jobs.is_empty() {
                return Err("the new token must list jobs within this token's jobs".into());
            }
            if let Some(j) = other.jobs.iter().find(|j| !self.jobs.contains(j)) {
                return Err(format!("job glob {j:?} is not one of this token's"));
            }
        }
        if !self.hosts.is_empty() {
            if other.hosts.is_empty() {
                return Err("the new token must list hosts within this token's hosts".into());
            }
            if let Some(h) = other.hosts.iter().find(|h| !self.hosts.contains(h)) {
                return Err(format!(
                    "host entry {:?} is not one of this token's",
                    h.as_str()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jobs: &[&str], hosts: &[&str], verbs: &[&str]) -> Result<Policy, String> {
        Policy::check(&TokenPolicy {
            jobs: jobs.iter().map(|s| s.to_string()).collect(),
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn host(name: &str, ip: &str) -> HostIdentity {
        HostIdentity {
            hostname: name.into(),
            ips: vec![ip.parse().unwrap()],
            ..HostIdentity::default()
        }
    }

    fn sel(white: &[&str]) -> HostSelector {
        HostSelector {
            white: white
                .iter()
                .map(|s| HostPattern::parse(s).unwrap())
                .collect(),
            ..HostSelector::default()
        }
    }

    #[test]
    fn strict_reading_refuses_bad_input() {
        assert!(policy(&["team-a-*"], &["node-1"], &["read", "run"]).is_ok());
        let e = policy(&[], &[], &["read", "fly"]).unwrap_err();
        assert!(e.contains("unknown verb \"fly\""), "{e}");
        let e = policy(&["team a"], &[], &[]).unwrap_err();
        assert!(e.contains("job glob"), "{e}");
        assert!(policy(&[""], &[], &[]).is_err());
        let e = policy(&[], &["10.0.0.0/99"], &[]).unwrap_err();
        assert!(e.contains("10.0.0.0/99"), "{e}");
    }

    #[test]
    fn a_verb_the_scope_cannot_use_is_refused() {
        let named = |verbs: &[&str]| TokenPolicy {
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            ..TokenPolicy::default()
        };
        let e = Policy::check_for(&named(&["read", "save"]), Scope::Viewer).unwrap_err();
        assert_eq!(
            e,
            "verb \"save\" needs an operator token; a viewer token can use only read"
        );
        let e = Policy::check_for(&named(&["tokens"]), Scope::Operator).unwrap_err();
        assert!(e.starts_with("verb \"tokens\" needs an admin token"), "{e}");
        assert!(Policy::check_for(&named(&["read"]), Scope::Viewer).is_ok());
        assert!(Policy::check_for(&named(&["secrets", "run"]), Scope::Operator).is_ok());
        assert!(Policy::check_for(&named(&["tokens", "notify"]), Scope::Admin).is_ok());
        // No verbs named: the scope's own limits apply, as before.
        assert!(Policy::check_for(&named(&[]), Scope::Viewer).is_ok());
    }

    #[test]
    fn verbs_default_excludes_secrets_and_tokens() {
        let p = policy(&["a"], &[], &[]).unwrap();
        assert!(p.allows(Verb::Run) && p.allows(Verb::Read));
        assert!(!p.allows(Verb::Secrets) && !p.allows(Verb::Tokens));
        let p = policy(&[], &[], &["read"]).unwrap();
        assert!(p.allows(Verb::Read) && !p.allows(Verb::Save));
        // A stored unknown verb grants nothing.
        let p = Policy::stored(&TokenPolicy {
            verbs: vec!["read".into(), "future".into()],
            ..TokenPolicy::default()
        });
        assert_eq!(p.verbs().collect::<Vec<_>>(), vec![Verb::Read]);
    }

    #[test]
    fn jobs_by_glob() {
        let p = policy(&["team-a-*", "shared"], &[], &[]).unwrap();
        assert!(p.sees_job("team-a-backup"));
        assert!(p.sees_job("shared"));
        assert!(!p.sees_job("team-b-backup"));
        assert!(!p.sees_job("shared2"));
        assert!(policy(&[], &[], &[]).unwrap().sees_job("anything"));
        // The ad-hoc pseudo-job is nobody's, however wide the glob.
        for glob in ["a*", "*", "adhoc"] {
            let p = policy(&[glob], &[], &[]).unwrap();
            assert!(!p.sees_job(crate::invoke::ADHOC_JOB), "{glob}");
        }
        assert!(
            policy(&[], &[], &[])
                .unwrap()
                .sees_job(crate::invoke::ADHOC_JOB)
        );
    }

    #[test]
    fn hosts_and_selections() {
        let p = policy(&[], &["node-1", "10.1.0.0/16", "web-*"], &[]).unwrap();
        assert!(p.reaches_host(&host("node-1", "10.9.0.1")));
        assert!(p.reaches_host(&host("x", "10.1.2.3")));
        assert!(p.reaches_host(&host("web-3", "10.9.0.2")));
        assert!(!p.reaches_host(&host("node-3", "10.9.0.3")));

        assert!(p.confines(&sel(&["node-1"])).is_ok());
        assert!(p.confines(&sel(&["NODE-1", "web-*"])).is_ok());
        assert!(p.confines(&sel(&["web-7", "10.1.4.4"])).is_ok());
        let e = p.confines(&sel(&["node-1", "node-3"])).unwrap_err();
        assert!(e.contains("node-3"), "{e}");
        // A glob or CIDR other than the policy's own is not proven inside.
        assert!(p.confines(&sel(&["node-*"])).is_err());
        assert!(p.confines(&sel(&["10.0.0.0/8"])).is_err());
        // Every host: outside.
        let e = p.confines(&HostSelector::all()).unwrap_err();
        assert!(e.contains("every host"), "{e}");
        // Unrestricted policy confines anything.
        assert!(
            policy(&["a"], &[], &[])
                .unwrap()
                .confines(&HostSelector::all())
                .is_ok()
        );
        // Black lists only narrow: still inside.
        let mut s = sel(&["node-1"]);
        s.black = vec![HostPattern::parse("node-9").unwrap()];
        assert!(p.confines(&s).is_ok());
    }

    #[test]
    fn covers_only_narrower_policies() {
        let p = policy(&["team-a-*"], &["node-1", "node-2"], &["read", "tokens"]).unwrap();
        assert!(
            p.covers(&policy(&["team-a-*"], &["node-1"], &["read"]).unwrap())
                .is_ok()
        );
        assert!(
            p.covers(&policy(&["team-a-*"], &["node-1"], &["run"]).unwrap())
                .is_err()
        );
        assert!(
            p.covers(&policy(&["*"], &["node-1"], &["read"]).unwrap())
                .is_err()
        );
        assert!(
            p.covers(&policy(&["team-a-*"], &[], &["read"]).unwrap())
                .is_err()
        );
        assert!(
            p.covers(&policy(&["team-a-*"], &["node-3"], &["read"]).unwrap())
                .is_err()
        );
    }
}
