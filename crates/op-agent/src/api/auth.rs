//! Authentication of every endpoint but `/healthz` (DESIGN.md section 9).
//!
//! Accepted: HTTP basic auth with `auth_user`/`auth_password` (the seed's curl `-u`), or
//! `Authorization: Bearer TOKEN`. Secrets are kept and compared as SHA-256 digests with a
//! constant-time comparison, so neither the content nor the length of a secret leaks through
//! timing. A missing or wrong credential gets 401 with `WWW-Authenticate`.
//!
//! A person may choose the basic-auth password, so guessing is slowed as on the manager, with
//! the same limiter ([`op_tls::auth_failures`]): past its limit of wrong credentials from one
//! address, that address gets 429 with `Retry-After` for everything (the right credential
//! included) for a while. Other addresses, the manager's included, are served as before.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;

type Digest32 = [u8; 32];

fn digest(bytes: &[u8]) -> Digest32 {
    Sha256::digest(bytes).into()
}

/// The credentials the API accepts.
#[derive(Clone)]
pub struct Credentials {
    /// Digest of `user:password`, as carried by basic auth.
    basic: Option<Digest32>,
    token: Option<Digest32>,
}

impl Credentials {
    pub fn new(basic: Option<(&str, &str)>, token: Option<&str>) -> Credentials {
        Credentials {
            basic: basic.map(|(u, p)| digest(format!("{u}:{p}").as_bytes())),
            token: token.map(|t| digest(t.as_bytes())),
        }
    }

    /// True when the `Authorization` header carries an accepted credential.
    pub fn check(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(value) = authorization.and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let Some(expected) = &self.basic else {
                return false;
            };
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
                return false;
            };
            bool::from(digest(&decoded).ct_eq(expected))
        } else if scheme.eq_ignore_ascii_case("bearer") {
            let Some(expected) = &self.token else {
                return false;
            };
            bool::from(digest(rest.as_bytes()).ct_eq(expected))
        } else {
            false
        }
    }

    fn challenge(&self) -> &'static str {
        match (self.basic.is_some(), self.token.is_some()) {
            (true, true) => "Basic realm=\"op-agent\", Bearer realm=\"op-agent\"",
            (true, false) => "Basic realm=\"op-agent\"",
            _ => "Bearer realm=\"op-agent\"",
        }
    }
}

/// Middleware: lets the request through only with a valid credential.
pub async fn require(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let creds = &state.0.credentials;
    let ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let blocked = ip.and_then(|ip| state.0.auth_failures.check(ip).err());
    let authorization = req.headers().get(header::AUTHORIZATION);
    let err = if let Some(retry_after_secs) = blocked {
        ApiError::AuthBlocked { retry_after_secs }
    } else if creds.check(authorization) {
        return next.run(req).await;
    } else {
        // Only a presented, wrong credential counts as a guess; a missing one is just refused.
        if let (Some(ip), Some(_)) = (ip, authorization) {
            state.0.auth_failures.failed(ip);
        }
        ApiError::Unauthorized(
            "missing or invalid credential: use basic auth (-u USER:PASS) or Authorization: Bearer TOKEN".into(),
        )
    };
    let challenge = matches!(err, ApiError::Unauthorized(_));
    // The seed's endpoint answers in the seed's envelope, everything else in ErrorBody.
    let mut resp = if req.uri().path().starts_with("/api/") {
        err.seed()
    } else {
        err.into_response()
    };
    if challenge {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(creds.challenge()),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pass: &str) -> HeaderValue {
        let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        HeaderValue::from_str(&format!("Basic {enc}")).unwrap()
    }

    #[test]
    fn accepts_only_the_configured_secrets() {
        let c = Credentials::new(Some(("opuser", "pw")), Some("tok"));
        assert!(c.check(Some(&basic("opuser", "pw"))));
        assert!(!c.check(Some(&basic("opuser", "pw2"))));
        assert!(!c.check(Some(&basic("other", "pw"))));
        assert!(c.check(Some(&HeaderValue::from_static("Bearer tok"))));
        assert!(c.check(Some(&HeaderValue::from_static("bearer  tok"))));
        assert!(!c.check(Some(&HeaderValue::from_static("Bearer tok2"))));
        assert!(!c.check(Some(&HeaderValue::from_static("Basic !!!"))));
        assert!(!c.check(None));
        let token_only = Credentials::new(None, Some("tok"));
        assert!(!token_only.check(Some(&basic("opuser", "pw"))));
    }
}
