//! Console sessions, login and logout, and the middleware that guards every console route.
//!
//! Design:
//! - **Login** takes an API token (`ID.SECRET`) in a form. The token is checked by the same
//!   [`Authenticator`](crate::auth::Authenticator) as the API, and a wrong one counts toward
//!   the same per-address limit on failed authentications; agent tokens are refused.
//! - **The session** lives in this manager's memory: the browser holds only a random 256-bit id
//!   in the `op_session` cookie (`HttpOnly; SameSite=Strict; Path=/ui`, and `Secure` under
//!   TLS); the map is keyed by the
//!   SHA-256 of that id. The server side keeps the token, because every change the console makes
//!   is a call to the `/v1` API under the user's own token (the same policy, audit actor and
//!   leader forwarding as `agentcli`). Sessions end after [`IDLE`] without use, after
//!   [`ABSOLUTE`] in any case, at logout, and at once when the token is revoked or expires (the
//!   token is verified on every request). A manager restart ends all sessions.
//! - **CSRF**: each session has a random synchronizer token, rendered into every form (`csrf`
//!   field) and into a `<meta>` tag for scripts (`X-CSRF-Token` header). The middleware refuses
//!   every non-GET console request whose token does not match, before any handler runs. The login
//!   form, which has no session yet, carries `HMAC(secret, nonce)` where the nonce is in a
//!   short-lived `op_login` cookie.
//! - **Scopes**: a viewer session gets pages without write controls, and the middleware refuses
//!   its POSTs (other than logout) with 403, whatever a forged form says.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use op_proto::api::Scope;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Ui;
use super::html::{self, Section, attr, esc};
pub use super::session_view::SessionView;
use crate::api::extract::UnreadBody;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "op_session";
/// The login form's nonce cookie.
const LOGIN_COOKIE: &str = "op_login";
/// A session unused this long ends.
pub const IDLE: Duration = Duration::from_secs(2 * 3600);
/// A session ends this long after login, used or not.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the least recently used goes first.
const MAX_SESSIONS: usize = 10_000;
/// The header scripts send the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

struct Session {
    token: String,
    csrf: String,
    created: Instant,
    last_used: Instant,
}

/// The sessions of this manager.
pub struct Sessions {
    secret: [u8; 32],
    map: Mutex<HashMap<[u8; 32], Session>>,
}

fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`.
fn hmac_sha256(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new()
    }
}

impl Sessions {
    pub fn new() -> Sessions {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        Sessions {
            secret,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session for `token`; returns the cookie value.
    pub fn create(&self, token: String) -> String {
        let id = random_hex(32);
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, s| !expired(s, now));
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_used).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            key(&id),
            Session {
                token,
                csrf: random_hex(32),
                created: now,
                last_used: now,
            },
        );
        id
    }

    /// The token and CSRF token of a live session (and marks it used).
    fn touch(&self, id: &str) -> Option<(String, String)> {
        let now = Instant::now();
        let mut map = self.lock();
        let k = key(id);
        let s = map.get_mut(&k)?;
        if expired(s, now) {
            map.remove(&k);
            return None;
        }
        s.last_used = now;
        Some((s.token.clone(), s.csrf.clone()))
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(&key(id));
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn login_csrf(&self, nonce: &str) -> String {
        hex::encode(hmac_sha256(
            &self.secret,
            format!("login:{nonce}").as_bytes(),
        ))
    }
}

fn expired(s: &Session, now: Instant) -> bool {
    now.duration_since(s.last_used) > IDLE || now.duration_since(s.created) > ABSOLUTE
}

/// The value of cookie `name`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Sets cookie `name`; `Secure` when the console is served over TLS, so a browser never sends
/// the session over plain HTTP.
fn set_cookie(ui: &Ui, resp: &mut Response, name: &str, value: &str, max_age: Option<u64>) {
    let age = max_age.map_or("Max-Age=0".to_string(), |s| format!("Max-Age={s}"));
    let secure = if ui.app.config.tls.is_some() {
        "Secure; "
    } else {
        ""
    };
    let c = format!("{name}={value}; Path=/ui; HttpOnly; {secure}SameSite=Strict; {age}");
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn redirect(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    html::secure_headers(resp.headers_mut());
    resp
}

/// Where to go after login: a console path only (no open redirect to another site).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if is_console_page(n) => n.to_string(),
        _ => "/ui".to_string(),
    }
}

/// True for a path (and query) of a console page on this host that is not the login page: a
/// place it is safe to send the browser back to.
fn is_console_page(p: &str) -> bool {
    (p == "/ui" || p.starts_with("/ui/") || p.starts_with("/ui?"))
        && !p.contains("//")
        && !p.contains('\\')
        && !p.starts_with("/ui/login")
}

/// The console page a request came from: the path and query of its `Referer` when that names
/// this host (the `Host` header, or the HTTP/2 authority) and a console page other than the
/// request's own URL. Anything else (another site, a stale reload of the same URL) gives none.
fn referring_page(req: &Request) -> Option<String> {
    let referer = req.headers().get(header::REFERER)?.to_str().ok()?;
    let rest = referer
        .strip_prefix("http://")
        .or_else(|| referer.strip_prefix("https://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))?;
    if !authority.eq_ignore_ascii_case(host) {
        return None;
    }
    let path = path.split('#').next().unwrap_or(path);
    let own = req.uri().path_and_query().map(|p| p.as_str());
    (is_console_page(path) && own != Some(path)).then(|| path.to_string())
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

fn login_page(ui: &Ui, next: &str, error: Option<&str>) -> Response {
    let nonce = random_hex(16);
    let csrf = ui.sessions.login_csrf(&nonce);
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    let body = format!(
        "<section class=\"login card\"><h1>Sign in</h1>{error}\
         <form method=\"post\" action=\"/ui/login\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <label for=\"token\">API token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" \
          placeholder=\"ID.SECRET\" required autofocus>\
         <p class=\"hint\">An admin, operator or viewer token: <code>DATA_DIR/admin.token</code> on a \
          new manager, or one made with <code>agentcli token create --scope viewer</code>.</p>\
         <button class=\"primary\" id=\"login\">Sign in</button></form></section>",
        attr(next)
    );
    let status = if error.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    let mut resp = html::respond(status, html::page("Sign in", Section::Login, None, &body));
    set_cookie(ui, &mut resp, LOGIN_COOKIE, &nonce, Some(1800));
    resp
}

pub async fn login_form(State(ui): State<Arc<Ui>>, Query(q): Query<LoginQuery>) -> Response {
    login_page(&ui, &safe_next(q.next.as_deref()), None)
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: Option<String>,
}

pub async fn login(State(ui): State<Arc<Ui>>, req: Request) -> Response {
    let nonce = cookie(req.headers(), LOGIN_COOKIE).unwrap_or_default();
    // The console's login counts toward the same token-guessing limit as the API.
    let ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(ip) = ip
        && let Err(secs) = ui.app.auth.failures.check(ip)
    {
        let mut resp = html::error_page(
            StatusCode::TOO_MANY_REQUESTS,
            None,
            &format!("too many failed sign-ins from this address; try again in {secs} s"),
        );
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let Ok(axum::Form(form)) = axum::Form::<LoginForm>::from_request(req, &()).await else {
        return html::error_page(
            StatusCode::BAD_REQUEST,
            None,
            "the login form was malformed",
        );
    };
    let next = safe_next(form.next.as_deref());
    if nonce.is_empty() || !same(&form.csrf, &ui.sessions.login_csrf(&nonce)) {
        return login_page(
            &ui,
            &next,
            Some("the login form expired or did not come from this console; try again"),
        );
    }
    let token = form.token.trim().to_string();
    let caller = match ui.app.auth.verify(&token, Utc::now()).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            if let Some(ip) = ip {
                ui.app.auth.failures.failed(ip);
            }
            return login_page(&ui, &next, Some("unknown, revoked or expired token"));
        }
        Err(e) => {
            return html::error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                &format!("could not check the token: {e}"),
            );
        }
    };
    if caller.scope == Scope::Agent {
        return login_page(
            &ui,
            &next,
            Some(
                "an agent token cannot sign in to the console; use a viewer, operator or admin token",
            ),
        );
    }
    let id = ui.sessions.create(token);
    tracing::info!(token = %caller.token_id, name = %caller.name, scope = caller.scope.as_str(), "console login");
    let mut resp = redirect(&next);
    set_cookie(
        &ui,
        &mut resp,
        SESSION_COOKIE,
        &id,
        Some(ABSOLUTE.as_secs()),
    );
    set_cookie(&ui, &mut resp, LOGIN_COOKIE, "", None);
    resp
}

pub async fn logout(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        ui.sessions.remove(&id);
    }
    let mut resp = redirect("/ui/login");
    set_cookie(&ui, &mut resp, SESSION_COOKIE, "", None);
    resp
}

/// Answers a refused request: a page for a browser navigation, JSON for a script.
fn refuse(
    status: StatusCode,
    headers: &HeaderMap,
    session: Option<&SessionView>,
    message: &str,
) -> Response {
    if headers.contains_key(CSRF_HEADER) {
        let mut resp = (
            status,
            axum::Json(op_proto::ErrorBody::new("console_refused", message)),
        )
            .into_response();
        html::secure_headers(resp.headers_mut());
        return resp;
    }
    html::error_page(status, session, message)
}

/// The job a console path names (`/ui/jobs/NAME...`, not the new/validate/save forms).
/// Decoded as the handler's `Path` extractor decodes it (see `api::guard::named_job`).
fn ui_named_job(path: &str) -> Option<String> {
    let name = path.strip_prefix("/ui/jobs/")?.split('/').next()?;
    (!name.is_empty() && !matches!(name, "new" | "validate" | "save"))
        .then(|| crate::api::percent_decoded(name))
}

/// Every console route but the login page and the static assets passes here: it finds the
/// session (or sends the browser to the login page), and for every other method than GET/HEAD
/// checks the scope and the CSRF token before the handler sees the request.
pub async fn guard(State(ui): State<Arc<Ui>>, req: Request, next: Next) -> Response {
    // As in the API's guard: a refusal may leave the body unread; finish it so that an HTTP/2
    // client reads the answer rather than a reset stream.
    let (req, unread) = UnreadBody::track(req);
    let idle = ui.app.config.header_read_timeout;
    let resp = check(ui, req, next).await;
    unread.drain(idle).await;
    resp
}

async fn check(ui: Arc<Ui>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path == "/ui/login" || path.starts_with("/ui/static/") {
        return next.run(req).await;
    }
    let found = match cookie(req.headers(), SESSION_COOKIE) {
        Some(id) => ui.sessions.touch(&id).map(|s| (id, s)),
        None => None,
    };
    let mut view = None;
    if let Some((id, (token, csrf))) = found {
        match ui.app.auth.verify(&token, Utc::now()).await {
            Ok(Some(caller)) if caller.scope.can_read() => {
                view = Some(SessionView {
                    caller,
                    csrf,
                    token,
                    back: referring_page(&req),
                })
            }
            Ok(_) => ui.sessions.remove(&id),
            Err(e) => {
                return html::error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    None,
                    &format!("could not check the session's token: {e}"),
                );
            }
        }
    }
    // A policy token's session sees its own jobs' pages only (lists filter in their handlers;
    // writes go through the API, which checks the policy itself).
    if let Some(v) = &view
        && let Some(job) = ui_named_job(&path)
        && !v.caller.sees_job(&job)
    {
        return refuse(
            StatusCode::NOT_FOUND,
            req.headers(),
            Some(v),
            &format!("no job named {job:?}"),
        );
    }
    let safe = req.method() == Method::GET || req.method() == Method::HEAD;
    let Some(view) = view else {
        if safe {
            let target = req
                .uri()
                .path_and_query()
                .map_or("/ui".to_string(), |p| p.to_string());
            return redirect(&format!("/ui/login?next={}", html::url(&target)));
        }
        return refuse(
            StatusCode::UNAUTHORIZED,
            req.headers(),
            None,
            "no session (or it ended): sign in again",
        );
    };
    if !safe {
        if path != "/ui/logout" && !view.can_operate() {
            return refuse(
                StatusCode::FORBIDDEN,
                req.headers(),
                Some(&view),
                "a viewer token may not change anything; sign in with an operator or admin token",
            );
        }
        let presented = match req.headers().get(CSRF_HEADER) {
            Some(v) => v.to_str().unwrap_or("").to_string(),
            None => {
                let is_form = req
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
                if is_form {
                    let (parts, body) = req.into_parts();
                    let bytes =
                        match axum::body::to_bytes(body, ui.app.config.json_body_limit).await {
                            Ok(b) => b,
                            Err(_) => {
                                return html::error_page(
                                    StatusCode::PAYLOAD_TOO_LARGE,
                                    Some(&view),
                                    "the form is larger than the manager accepts",
                                );
                            }
                        };
                    let token = form_field(&bytes, "csrf").unwrap_or_default();
                    req = Request::from_parts(parts, Body::from(bytes));
                    token
                } else {
                    String::new()
                }
            }
        };
        if !same(&presented, &view.csrf) {
            return refuse(
                StatusCode::FORBIDDEN,
                req.headers(),
                Some(&view),
                "the request carried no valid CSRF token (a stale page, or a form from another site); reload the page and try again",
            );
        }
    }
    req.extensions_mut().insert(view);
    next.run(req).await
}

/// The first value of `name` in a urlencoded form body.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = form_pairs(body)?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// Decodes `a=b&c=d` (with `+` as space and percent escapes).
pub fn form_pairs(body: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).ok()?;
    let decode = |s: &str| -> Option<String> {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                let h = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).ok()
    };
    text.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2_shape() {
        // RFC 4231 test case 2 uses a 4-byte key; ours is always 32 bytes, zero-padded the same way.
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(b"Jefe");
        assert_eq!(
            hex::encode(hmac_sha256(&k, b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn sessions_expire_and_are_removed() {
        let s = Sessions::new();
        let id = s.create("a.b".into());
        assert!(s.touch(&id).is_some());
        assert!(s.touch("nope").is_none());
        s.remove(&id);
        assert!(s.touch(&id).is_none());
        let now = Instant::now();
        let old = Session {
            token: String::new(),
            csrf: String::new(),
            created: now,
            last_used: now,
        };
        assert!(!expired(&old, now));
        assert!(expired(&old, now + IDLE + Duration::from_secs(1)));
    }

    #[test]
    fn next_stays_on_the_console() {
        assert_eq!(safe_next(Some("/ui/jobs?q=a")), "/ui/jobs?q=a");
        assert_eq!(safe_next(Some("//evil.example/ui")), "/ui");
        assert_eq!(safe_next(Some("https://evil.example")), "/ui");
        assert_eq!(safe_next(Some("/ui//evil")), "/ui");
        assert_eq!(safe_next(Some("/uix")), "/ui");
        assert_eq!(safe_next(None), "/ui");
    }

    #[test]
    fn error_pages_go_back_only_to_this_consoles_pages() {
        let req = |uri: &str, referer: &str| {
            Request::builder()
                .uri(uri)
                .header(header::HOST, "mgr:8090")
                .header(header::REFERER, referer)
                .body(Body::empty())
                .unwrap()
        };
        let back = |uri: &str, referer: &str| referring_page(&req(uri, referer));
        assert_eq!(
            back(
                "/ui/packages/t/rollback",
                "http://mgr:8090/ui/packages/t?page=2#x"
            )
            .as_deref(),
            Some("/ui/packages/t?page=2")
        );
        // Another host, another scheme's trick, a non-console page, the login page, itself.
        assert_eq!(back("/ui/x", "http://evil.example/ui/jobs"), None);
        assert_eq!(back("/ui/x", "javascript:alert(1)"), None);
        assert_eq!(back("/ui/x", "http://mgr:8090/v1/jobs"), None);
        assert_eq!(back("/ui/x", "http://mgr:8090/ui/login?next=/ui"), None);
        assert_eq!(back("/ui/jobs/a", "http://mgr:8090/ui/jobs/a"), None);
        assert_eq!(back("/ui/x", "http://mgr:8090//evil.example/ui"), None);
    }

    #[test]
    fn form_fields_decode() {
        assert_eq!(
            form_field(b"a=1&csrf=x%2By+z&b=", "csrf").as_deref(),
            Some("x+y z")
        );
        assert_eq!(form_field(b"a=%zz", "a"), None);
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; op_session=abc".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
    }
}
