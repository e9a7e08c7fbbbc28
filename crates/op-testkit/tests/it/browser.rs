//! A real headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`),
//! with just the commands the console scenarios use. Every wait has a deadline; nothing sleeps
//! for a guessed time.
//!
//! A missing browser is a failure with the fix in the message, never a skipped test: CI installs
//! both packages (`.ci/run`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long a page has to show what a step waits for.
pub const WAIT: Duration = Duration::from_secs(30);

fn find_program(candidates: &[&str]) -> Option<PathBuf> {
    for c in candidates {
        let p = Path::new(c);
        if p.is_absolute() {
            if p.is_file() {
                return Some(p.to_path_buf());
            }
            continue;
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        for dir in std::env::split_paths(&path) {
            let full = dir.join(c);
            if full.is_file() {
                return Some(full);
            }
        }
    }
    None
}

const MISSING: &str = "install Debian's `chromium` and `chromium-driver` packages \
    (apt-get install -y chromium chromium-driver; .ci/run does this on CI)";

/// Where screenshots go: `target/ui-screenshots/` beside the test binaries' profile dir.
pub fn screenshot_dir() -> PathBuf {
    let dir = op_testkit::bin_dir()
        .parent()
        .map(|p| p.join("ui-screenshots"))
        .unwrap_or_else(|| PathBuf::from("ui-screenshots"));
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// One browser session (its own chromedriver and profile), closed on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a `width`x`height` window.
    pub async fn start(width: u32, height: u32) -> Browser {
        let driver_bin = find_program(&["chromedriver", "/usr/lib/chromium/chromedriver"])
            .unwrap_or_else(|| panic!("chromedriver is missing: {MISSING}"));
        let chrome_bin = find_program(&[
            "/usr/lib/chromium/chromium",
            "chromium",
            "chromium-browser",
            "google-chrome",
        ])
        .unwrap_or_else(|| panic!("chromium is missing: {MISSING}"));
        // With `--port=0` chromedriver picks a port, lets it go and binds it again; another test
        // may take it in between ("IPv4 port not available. Exiting..."): start it again.
        let mut attempts = 0;
        let (driver, mut out, port) = loop {
            attempts += 1;
            let mut driver = Command::new(&driver_bin)
                .arg("--port=0")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("could not start {}: {e}", driver_bin.display()));
            // "ChromeDriver was started successfully on port 35061."
            let mut out = BufReader::new(driver.stdout.take().expect("piped stdout"));
            let mut port = None;
            let mut seen = String::new();
            for _ in 0..20 {
                let mut line = String::new();
                if out.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                seen.push_str(&line);
                if let Some(rest) = line.split("successfully on port ").nth(1) {
                    port = rest.trim().trim_end_matches('.').parse::<u16>().ok();
                    break;
                }
            }
            match port {
                Some(port) => break (driver, out, port),
                None => {
                    let _ = driver.kill();
                    let _ = driver.wait();
                    if attempts == 5 || !seen.contains("port not available") {
                        panic!(
                            "chromedriver did not say which port it serves ({attempts} attempts); \
                             it printed:\n{seen}"
                        );
                    }
                }
            }
        };
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while out.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        let profile = tempfile::tempdir().expect("profile dir");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chrome_bin.to_string_lossy(),
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--no-first-run",
                            "--disable-extensions",
                            "--disable-background-networking",
                            format!("--window-size={width},{height}"),
                            format!("--user-data-dir={}", profile.path().display()),
                        ]
                    }
                }
            }
        });
        let deadline = Instant::now() + WAIT;
        let answer = loop {
            match http
                .post(format!("{base}/session"))
                .json(&caps)
                .send()
                .await
            {
                Ok(r) => break r.json::<Value>().await.expect("session answer"),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("chromedriver on port {port} does not answer: {e}"),
            }
        };
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("could not start Chromium ({MISSING}): {answer}"))
            .to_string();
        Browser {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let req = self.http.request(method, &url);
        let req = if body.is_null() { req } else { req.json(&body) };
        let answer: Value = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("webdriver {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("webdriver {path}: {e}"));
        if let Some(err) = answer["value"]["error"].as_str() {
            panic!("webdriver {path}: {err}: {}", answer["value"]["message"]);
        }
        answer["value"].clone()
    }

    async fn try_cmd(&self, method: reqwest::Method, path: &str, body: Value) -> Option<Value> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let req = self.http.request(method, &url);
        let req = if body.is_null() { req } else { req.json(&body) };
        let answer: Value = req.send().await.ok()?.json().await.ok()?;
        if answer["value"]["error"].is_string() {
            return None;
        }
        Some(answer["value"].clone())
    }

    pub async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    pub async fn url(&self) -> String {
        self.cmd(reqwest::Method::GET, "/url", Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Elements matching `css` now (maybe none).
    pub async fn find_all(&self, css: &str) -> Vec<String> {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/elements",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first element matching `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(e) = self.find_all(css).await.into_iter().next() {
                return e;
            }
            if Instant::now() > deadline {
                panic!(
                    "no element {css:?} on {} after {WAIT:?}; the page says:\n{}",
                    self.url().await,
                    self.body_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            json!({}),
        )
        .await;
    }

    /// Replaces the text of an input or textarea by typing `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{e}/clear"),
            json!({}),
        )
        .await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// The visible text of the first element matching `css` (empty when there is none).
    pub async fn text(&self, css: &str) -> String {
        match self.find_all(css).await.into_iter().next() {
            Some(e) => self
                .try_cmd(
                    reqwest::Method::GET,
                    &format!("/element/{e}/text"),
                    Value::Null,
                )
                .await
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            None => String::new(),
        }
    }

    pub async fn body_text(&self) -> String {
        self.text("body").await
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub async fn exec(&self, script: &str, args: Value) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/async",
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// Waits until the text of `css` satisfies `ok`; returns it.
    pub async fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let t = self.text(css).await;
            if ok(&t) {
                return t;
            }
            if Instant::now() > deadline {
                let shot = self.screenshot("failed-wait").await;
                panic!(
                    "timed out after {WAIT:?} waiting for {what} in {css:?} on {}; it says:\n{t}\n\
                     the page says:\n{}\n(screenshot: {})",
                    self.url().await,
                    self.body_text().await,
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the page's script has started (times localised, live regions wired).
    pub async fn ready(&self) {
        self.find("html[data-console-ready]").await;
    }

    /// Accepts the `confirm()` the page shows, waiting for it.
    pub async fn accept_dialog(&self) {
        let deadline = Instant::now() + WAIT;
        while self
            .try_cmd(reqwest::Method::POST, "/alert/accept", json!({}))
            .await
            .is_none()
        {
            assert!(Instant::now() < deadline, "no dialog appeared");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The browser's cookie `name`, as WebDriver sees it (with its flags).
    pub async fn cookie(&self, name: &str) -> Value {
        self.cmd(
            reqwest::Method::GET,
            &format!("/cookie/{name}"),
            Value::Null,
        )
        .await
    }

    /// Sets the window's size (a phone, a laptop).
    pub async fn resize(&self, width: u32, height: u32) {
        self.cmd(
            reqwest::Method::POST,
            "/window/rect",
            json!({ "width": width, "height": height }),
        )
        .await;
    }

    /// Saves a PNG of the viewport as `target/ui-screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let v = self
            .cmd(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("screenshot data"))
            .expect("base64 screenshot");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing the session ends Chromium; then chromedriver itself.
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    let _ = reqwest::Client::new()
                        .delete(url)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                });
            }
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
