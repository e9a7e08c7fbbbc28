//! The middleware every request passes: API version check, authentication, and the access
//! policy, decided in ONE function ([`required_access`]) from the method and path so that no
//! handler can forget it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::Utc;
use op_proto::api::Scope;
use op_proto::policy::Verb;
use op_proto::{API_VERSION, API_VERSION_HEADER};

use super::error::ApiError;
use super::extract::UnreadBody;
use crate::app::App;
use crate::auth::Caller;

/// What a route demands of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credential (`/healthz` only).
    Public,
    /// viewer, operator or admin.
    Read,
    /// operator or admin.
    Operate,
    /// admin only.
    Admin,
    /// agent only.
    Agent,
    /// viewer, operator, admin or agent: package content, which agents download.
    ReadOrAgent,
}

/// The access policy (DESIGN section 9).
pub fn required_access(method: &Method, path: &str) -> Access {
    if path == "/healthz" {
        Access::Public
    } else if path.starts_with("/v1/agent/") {
        Access::Agent
    } else if (method == Method::GET || method == Method::HEAD)
        && path.starts_with("/v1/packages/")
        && path.ends_with("/content")
    {
        Access::ReadOrAgent
    } else if path == "/v1/tokens" || path.starts_with("/v1/tokens/") {
        Access::Admin
    } else if (path == "/v1/notify" || path.starts_with("/v1/notify/"))
        && method != Method::GET
        && method != Method::HEAD
    {
        // A rule makes every manager read files from its disk (HMAC key, SMTP password) and
        // send to the address it names; `test` sends at once.
        Access::Admin
    } else if path == "/v1/secrets" && (method == Method::GET || method == Method::HEAD) {
        // Secret names (never values): for those who write the jobs that use them.
        Access::Operate
    } else if path == "/v1/secrets" || path.starts_with("/v1/secrets/") {
        Access::Admin
    } else if path.starts_with("/v1/cluster/") {
        // Membership and leadership: as powerful as holding the cluster secret.
        Access::Admin
    } else if method == Method::GET || method == Method::HEAD {
        Access::Read
    } else {
        Access::Operate
    }
}

/// The verb a request needs of a token policy (docs/security.md, "Token policies"), decided
/// here beside [`required_access`] so that every route has one. `None`: no policy token may
/// (cluster membership and leadership need an unrestricted admin token).
///
/// Read from the route's shape, segment by segment: a name in the path (a job called
/// `rollout`, a package called `rollback`, a node called `drain`) is never taken for the
/// action, so it cannot turn a save or a run into a verb the token holds.
pub fn required_verb(method: &Method, path: &str) -> Option<Verb> {
    let read = method == Method::GET || method == Method::HEAD;
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let delete = method == Method::DELETE;
    Some(match segs.as_slice() {
        ["v1", "tokens", ..] => Verb::Tokens,
        ["v1", "secrets", ..] | ["v1", "cluster", "secrets-key", ..] => Verb::Secrets,
        _ if read => Verb::Read,
        ["v1", "cluster", ..] => return None,
        ["v1", "notify", ..] => Verb::Notify,
        ["v1", "rollouts", ..] | ["v1", "packages", _, "rollout"] => Verb::Rollout,
        ["v1", "agents", "upgrade", ..] => Verb::Upgrade,
        ["v1", "packages", _, "rollback"] => Verb::Rollback,
        ["v1", "packages", _, _] if delete => Verb::Delete,
        ["v1", "packages", _] => Verb::Upload,
        ["v1", "jobs", _] if delete => Verb::Delete,
        ["v1", "jobs", _] => Verb::Save,
        ["v1", "jobs", _, "run"] => Verb::Run,
        ["v1", "jobs", _, "enable" | "disable"] => Verb::Pause,
        ["v1", "exec"] => Verb::Exec,
        // cancel, retry
        ["v1", "invocations", _, _] => Verb::Run,
        ["v1", "nodes", _] if delete => Verb::Delete,
        ["v1", "nodes", _, "labels"] => Verb::Label,
        ["v1", "nodes", _, "drain" | "undrain"] => Verb::Pause,
        ["v1", "pauses"] | ["v1", "pauses", "resume"] | ["v1", "windows", ..] => Verb::Pause,
        _ => return None,
    })
}

/// The job a path names (`/v1/jobs/NAME...`), for a policy's job globs: percent-decoded as
/// the handler's `Path` extractor decodes it, so that the glob judges the job the handler
/// acts on (`x%2db` is the job `x-b`, which a glob `*db` does not cover).
pub fn named_job(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v1/jobs/")?;
    let name = rest.split('/').next()?;
    (!name.is_empty()).then(|| percent_decoded(name))
}

/// A path segment with its `%XX` escapes decoded (invalid escapes kept as they are, as axum
/// keeps them; bytes that are not UTF-8 replaced, so they match no glob of a valid name).
pub fn percent_decoded(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A policy token's verb and named job (the scope was checked first: a policy never grants more).
fn policy_allows(caller: &Caller, method: &Method, path: &str) -> Result<(), ApiError> {
    let Some(policy) = &caller.policy else {
        return Ok(());
    };
    match required_verb(method, path) {
        Some(verb) if policy.allows(verb) => {}
        Some(verb) => {
            return Err(ApiError::Denied(format!(
                "token {:?} lacks the verb \"{verb}\" this request needs (its policy grants: {})",
                caller.name,
                policy
                    .verbs()
                    .map(Verb::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            )));
        }
        None => {
            return Err(ApiError::Denied(format!(
                "token {:?} has a policy; {method} {path} needs an admin token without one",
                caller.name
            )));
        }
    }
    if let Some(job) = named_job(path) {
        caller.check_job(&job)?;
    }
    // The metrics name every job and node: not for a token limited to some of them.
    if path == "/metrics" && (policy.restricts_jobs() || policy.restricts_hosts()) {
        return Err(ApiError::Denied(format!(
            "token {:?} is limited to some jobs or hosts, and /metrics covers all of them; \
             scrape with a token without a policy",
            caller.name
        )));
    }
    Ok(())
}

fn allows(scope: Scope, access: Access, path: &str) -> Result<(), ApiError> {
    let ok = match access {
        Access::Public => true,
        Access::Read => scope.can_read(),
        Access::Operate => scope.can_operate(),
        Access::Admin => scope == Scope::Admin,
        Access::Agent => scope == Scope::Agent,
        Access::ReadOrAgent => scope.can_read() || scope == Scope::Agent,
    };
    if ok {
        return Ok(());
    }
    // The refusal names what this request does: a viewer listing secret names was told it
    // "may not change jobs, runs, nodes or packages".
    let secrets = path == "/v1/secrets"
        || path.starts_with("/v1/secrets/")
        || path.starts_with("/v1/cluster/secrets-key");
    let (action, needs) = match access {
        Access::Read => ("read fleet data", "a viewer, operator or admin token"),
        Access::Operate if secrets => ("list secret names", "an operator or admin token"),
        Access::Operate => (
            "change jobs, runs, nodes or packages",
            "an operator or admin token",
        ),
        Access::Admin if secrets => ("set, remove or rotate secrets", "an admin token"),
        Access::Admin if path == "/v1/notify" || path.starts_with("/v1/notify/") => {
            ("change or test notification rules", "an admin token")
        }
        Access::Admin if path == "/v1/tokens" || path.starts_with("/v1/tokens/") => {
            ("manage tokens", "an admin token")
        }
        Access::Admin => ("change cluster membership or leadership", "an admin token"),
        Access::Agent => ("use the agent protocol", "an agent token"),
        Access::ReadOrAgent => (
            "download packages",
            "a viewer, operator, admin or agent token",
        ),
        Access::Public => ("", ""),
    };
    Err(ApiError::forbidden(scope, action, needs))
}

/// The token of `Authorization: Bearer T`, or the password of `Authorization: Basic` (the seed's
/// clients used basic auth; any user name is accepted, the password is the token).
fn presented_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (_, password) = text.split_once(':')?;
        return Some(password.to_string());
    }
    None
}

/// Checks the caller, runs the request, counts the response by status code (rejections
/// included) and times it by route template. One middleware rather than two: every middleware
/// layer boxes a future per request, and a parked sync call keeps its boxes for its whole wait.
pub async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = std::time::Instant::now();
    let (req, unread) = UnreadBody::track(req);
    let resp = match admit(&app, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    // A refusal (here or in a handler) may leave the body unread: finish it so that an HTTP/2
    // client reads the answer rather than a reset stream.
    unread.drain(app.config.header_read_timeout).await;
    app.metrics
        .http_request(&route, started.elapsed().as_secs_f64());
    app.metrics.http_response(resp.status().as_u16());
    resp
}

/// The API version, the credentials and the access policy; the request, with the caller in its
/// extensions, when all three pass.
async fn admit(app: &App, mut req: Request) -> Result<Request, ApiError> {
    // Every value counts: a proxy or client that added a second header must not slip through.
    for v in req.headers().get_all(API_VERSION_HEADER) {
        let client = String::from_utf8_lossy(v.as_bytes()).trim().to_string();
        if client != API_VERSION.to_string() {
            return Err(ApiError::ApiVersion { client });
        }
    }
    let access = required_access(req.method(), req.uri().path());
    if access != Access::Public {
        let ip = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some(ip) = ip {
            app.auth
                .failures
                .check(ip)
                .map_err(|retry_after_secs| ApiError::AuthBlocked { retry_after_secs })?;
        }
        // Only a presented, wrong credential counts as a guess; a missing one is just refused.
        let token = presented_token(req.headers()).ok_or(ApiError::Unauthorized)?;
        let Some(caller) = app.auth.verify(&token, Utc::now()).await? else {
            if let Some(ip) = ip {
                app.auth.failures.failed(ip);
            }
            return Err(ApiError::Unauthorized);
        };
        allows(caller.scope, access, req.uri().path())?;
        policy_allows(&caller, req.method(), req.uri().path())?;
        req.extensions_mut().insert(caller);
    }
    // A removed member's state no longer moves: send everyone to the members instead.
    if app.cluster.removed()
        && !matches!(
            req.uri().path(),
            "/healthz" | "/metrics" | "/v1/cluster" | "/v1/version"
        )
    {
        return Err(ApiError::Removed {
            members: app.managers(),
        });
    }
    Ok(req)
}

/// Refuses a change to package `name` as a whole (rollback, deleting a version, its default
/// rollout, its rollouts' actions) to a token limited to some hosts, unless every stored version
/// of it is targeted within them, as an upload by that token must be: otherwise the change
/// reaches hosts the token may not target.
pub(super) async fn check_own_package(
    app: &App,
    caller: &Caller,
    name: &str,
) -> Result<(), ApiError> {
    let Some(policy) = caller.policy.as_ref().filter(|p| p.restricts_hosts()) else {
        return Ok(());
    };
    let n = name.to_string();
    for v in app.read(move |s| s.package_versions(&n)).await? {
        policy.confines(&v.target).map_err(|e| {
            ApiError::Denied(format!(
                "token {:?} may not change package {name:?}: its version {} goes to hosts \
                 outside the token's ({})",
                caller.name,
                v.version,
                e.replacen("the job selects", "the version goes to", 1)
            ))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert_eq!(required_access(&Method::GET, "/healthz"), Access::Public);
        assert_eq!(required_access(&Method::GET, "/metrics"), Access::Read);
        assert_eq!(required_access(&Method::PUT, "/v1/jobs/x"), Access::Operate);
        assert_eq!(required_access(&Method::GET, "/v1/tokens"), Access::Admin);
        assert_eq!(
            required_access(&Method::POST, "/v1/agent/sync"),
            Access::Agent
        );
        for (method, path) in [
            (Method::POST, "/v1/jobs/x/run"),
            (Method::POST, "/v1/exec"),
            (Method::POST, "/v1/invocations/x/cancel"),
        ] {
            assert_eq!(required_access(&method, path), Access::Operate, "{path}");
        }
        assert_eq!(
            required_access(&Method::GET, "/v1/invocations/x"),
            Access::Read
        );
        assert!(allows(Scope::Viewer, Access::Read, "/v1/jobs").is_ok());
        assert!(allows(Scope::Viewer, Access::Operate, "/v1/jobs/x").is_err());
        assert!(allows(Scope::Agent, Access::Operate, "/v1/jobs/x").is_err());
        assert!(allows(Scope::Agent, Access::Read, "/v1/jobs").is_err());
        assert!(allows(Scope::Admin, Access::Agent, "/v1/agent/sync").is_err());
        assert!(allows(Scope::Operator, Access::Admin, "/v1/tokens").is_err());
        // The refusal says what the request does.
        for (scope, access, path, says) in [
            (
                Scope::Viewer,
                Access::Operate,
                "/v1/secrets",
                "list secret names",
            ),
            (Scope::Viewer, Access::Operate, "/v1/jobs/x", "change jobs"),
            (
                Scope::Operator,
                Access::Admin,
                "/v1/secrets/db/pw",
                "set, remove or rotate secrets",
            ),
            (
                Scope::Operator,
                Access::Admin,
                "/v1/notify/ops",
                "notification rules",
            ),
            (
                Scope::Operator,
                Access::Admin,
                "/v1/tokens",
                "manage tokens",
            ),
            (
                Scope::Operator,
                Access::Admin,
                "/v1/cluster/members",
                "cluster membership",
            ),
        ] {
            let err = allows(scope, access, path).unwrap_err().to_string();
            assert!(err.contains(says), "{path}: {err}");
        }
        assert_eq!(required_access(&Method::GET, "/v1/notify"), Access::Read);
        for (method, path) in [
            (Method::POST, "/v1/notify"),
            (Method::PUT, "/v1/notify/ops"),
            (Method::DELETE, "/v1/notify/ops"),
            (Method::POST, "/v1/notify/ops/test"),
        ] {
            assert_eq!(required_access(&method, path), Access::Admin, "{path}");
        }
        assert_eq!(
            required_access(&Method::GET, "/v1/secrets"),
            Access::Operate
        );
        for (method, path) in [
            (Method::PUT, "/v1/secrets/db/pw"),
            (Method::DELETE, "/v1/secrets/db/pw"),
            (Method::GET, "/v1/secrets/db/pw"),
            (Method::POST, "/v1/cluster/secrets-key/rotate"),
        ] {
            assert_eq!(required_access(&method, path), Access::Admin, "{path}");
        }
        let content = "/v1/packages/test.py/1730000000/content";
        assert_eq!(required_access(&Method::GET, content), Access::ReadOrAgent);
        assert!(allows(Scope::Agent, Access::ReadOrAgent, content).is_ok());
        assert!(allows(Scope::Viewer, Access::ReadOrAgent, content).is_ok());
        assert_eq!(required_access(&Method::GET, "/v1/packages"), Access::Read);
        assert_eq!(
            required_access(&Method::PUT, "/v1/packages/test.py"),
            Access::Operate
        );
        assert_eq!(required_access(&Method::DELETE, content), Access::Operate);
        assert_eq!(required_access(&Method::GET, "/v1/cluster"), Access::Read);
        assert_eq!(
            required_access(&Method::POST, "/v1/cluster/members"),
            Access::Admin
        );
        assert_eq!(
            required_access(&Method::DELETE, "/v1/cluster/members/2"),
            Access::Admin
        );
    }

    #[test]
    fn every_route_has_a_policy_verb() {
        let cases = [
            (Method::GET, "/v1/jobs", Some(Verb::Read)),
            (Method::GET, "/v1/nodes/x", Some(Verb::Read)),
            (Method::PUT, "/v1/jobs/a", Some(Verb::Save)),
            (Method::DELETE, "/v1/jobs/a", Some(Verb::Delete)),
            (Method::POST, "/v1/jobs/a/run", Some(Verb::Run)),
            (Method::POST, "/v1/jobs/a/disable", Some(Verb::Pause)),
            (Method::POST, "/v1/exec", Some(Verb::Exec)),
            (Method::POST, "/v1/invocations/x/retry", Some(Verb::Run)),
            (Method::PUT, "/v1/packages/p", Some(Verb::Upload)),
            (
                Method::POST,
                "/v1/packages/p/rollback",
                Some(Verb::Rollback),
            ),
            (Method::DELETE, "/v1/packages/p/1", Some(Verb::Delete)),
            (Method::POST, "/v1/nodes/n/labels", Some(Verb::Label)),
            (Method::DELETE, "/v1/nodes/n", Some(Verb::Delete)),
            (Method::POST, "/v1/notify", Some(Verb::Notify)),
            (Method::GET, "/v1/tokens", Some(Verb::Tokens)),
            (Method::POST, "/v1/tokens", Some(Verb::Tokens)),
            (Method::GET, "/v1/secrets", Some(Verb::Secrets)),
            (Method::PUT, "/v1/secrets/db/pw", Some(Verb::Secrets)),
            (
                Method::POST,
                "/v1/cluster/secrets-key/rotate",
                Some(Verb::Secrets),
            ),
            (Method::POST, "/v1/pauses", Some(Verb::Pause)),
            (Method::POST, "/v1/pauses/resume", Some(Verb::Pause)),
            (Method::PUT, "/v1/windows/nightly", Some(Verb::Pause)),
            (Method::DELETE, "/v1/windows/nightly", Some(Verb::Pause)),
            (Method::POST, "/v1/nodes/n/drain", Some(Verb::Pause)),
            (Method::POST, "/v1/nodes/n/undrain", Some(Verb::Pause)),
            (Method::POST, "/v1/cluster/members", None),
            (Method::POST, "/v1/cluster/leader", None),
            (Method::PUT, "/v1/packages/p/rollout", Some(Verb::Rollout)),
            (
                Method::DELETE,
                "/v1/packages/p/rollout",
                Some(Verb::Rollout),
            ),
            (Method::POST, "/v1/rollouts/x/abort", Some(Verb::Rollout)),
            (
                Method::PUT,
                "/v1/agents/upgrade/op-agent-linux-x86_64",
                Some(Verb::Upgrade),
            ),
            (Method::POST, "/v1/agents/upgrade/pins", Some(Verb::Upgrade)),
            (Method::POST, "/v1/invocations/x/cancel", Some(Verb::Run)),
            // A name that reads as an action is still a name: saving a job called `rollout`
            // needs `save`, running it `run`, and so on.
            (Method::PUT, "/v1/jobs/rollout", Some(Verb::Save)),
            (Method::POST, "/v1/jobs/rollout/run", Some(Verb::Run)),
            (Method::POST, "/v1/jobs/labels/run", Some(Verb::Run)),
            (Method::DELETE, "/v1/jobs/upgrade", Some(Verb::Delete)),
            (Method::POST, "/v1/jobs/pause/enable", Some(Verb::Pause)),
            (Method::PUT, "/v1/packages/rollback", Some(Verb::Upload)),
            (Method::PUT, "/v1/packages/upgrade", Some(Verb::Upload)),
            (Method::DELETE, "/v1/packages/rollout/1", Some(Verb::Delete)),
            (Method::DELETE, "/v1/nodes/drain", Some(Verb::Delete)),
            (Method::POST, "/v1/nodes/rollout/labels", Some(Verb::Label)),
            (Method::POST, "/v1/unknown", None),
        ];
        for (method, path, verb) in cases {
            assert_eq!(required_verb(&method, path), verb, "{method} {path}");
        }
        assert_eq!(named_job("/v1/jobs/a/run").as_deref(), Some("a"));
        assert_eq!(named_job("/v1/jobs/x%2db/run").as_deref(), Some("x-b"));
        assert_eq!(named_job("/v1/jobs/a%2").as_deref(), Some("a%2"));
        assert_eq!(named_job("/v1/jobs"), None);
        assert_eq!(named_job("/v1/runs/x"), None);
    }

    fn caller(policy: Option<op_proto::policy::TokenPolicy>) -> Caller {
        Caller {
            token_id: "t".into(),
            name: "team".into(),
            scope: Scope::Admin,
            node_id: None,
            policy: policy
                .map(|p| std::sync::Arc::new(op_proto::policy::Policy::check(&p).unwrap())),
        }
    }

    #[test]
    fn a_policy_narrows_the_scope_by_verb_and_job() {
        let team = caller(Some(op_proto::policy::TokenPolicy {
            jobs: vec!["team-a-*".into()],
            hosts: vec![],
            verbs: vec!["read".into(), "run".into()],
        }));
        assert!(policy_allows(&team, &Method::GET, "/v1/jobs").is_ok());
        assert!(policy_allows(&team, &Method::GET, "/v1/jobs/team-a-x").is_ok());
        assert!(policy_allows(&team, &Method::POST, "/v1/jobs/team-a-x/run").is_ok());
        assert!(policy_allows(&team, &Method::GET, "/v1/jobs/team-b-x").is_err());
        assert!(policy_allows(&team, &Method::POST, "/v1/jobs/team-b-x/run").is_err());
        assert!(policy_allows(&team, &Method::PUT, "/v1/jobs/team-a-x").is_err());
        // The glob judges the name the handler decodes: `x%2db` is `x-b`, outside `*db`.
        let db = caller(Some(op_proto::policy::TokenPolicy {
            jobs: vec!["*db".into()],
            hosts: vec![],
            verbs: vec!["read".into(), "run".into()],
        }));
        assert!(policy_allows(&db, &Method::POST, "/v1/jobs/main-db/run").is_ok());
        assert!(policy_allows(&db, &Method::POST, "/v1/jobs/x%2db/run").is_err());
        assert!(policy_allows(&db, &Method::POST, "/v1/jobs/main%2ddb/run").is_ok());
        assert!(policy_allows(&team, &Method::GET, "/v1/tokens").is_err());
        assert!(policy_allows(&team, &Method::PUT, "/v1/secrets/x").is_err());
        assert!(policy_allows(&team, &Method::POST, "/v1/cluster/members").is_err());
        // The metrics name every job: refused to a token limited to some.
        assert!(policy_allows(&team, &Method::GET, "/metrics").is_err());
        let reader = caller(Some(op_proto::policy::TokenPolicy {
            jobs: vec![],
            hosts: vec![],
            verbs: vec!["read".into()],
        }));
        assert!(policy_allows(&reader, &Method::GET, "/metrics").is_ok());
        // Without a policy, the scope alone decides (checked by `allows`).
        let root = caller(None);
        assert!(policy_allows(&root, &Method::POST, "/v1/cluster/members").is_ok());
        assert!(policy_allows(&root, &Method::GET, "/v1/jobs/team-b-x").is_ok());
    }

    #[test]
    fn basic_auth_password_is_the_token() {
        let mut h = HeaderMap::new();
        let b = base64::engine::general_purpose::STANDARD.encode("opuser:abc.def");
        h.insert(header::AUTHORIZATION, format!("Basic {b}").parse().unwrap());
        assert_eq!(presented_token(&h).as_deref(), Some("abc.def"));
        h.insert(header::AUTHORIZATION, "Bearer  xyz ".parse().unwrap());
        assert_eq!(presented_token(&h).as_deref(), Some("xyz"));
    }
}
