//! `spawn_app`: a `sygno serve` process on a free port, and one method per
//! endpoint.

use rand::Rng;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The `sygno` binary under test.
pub(crate) fn sygno_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SYGNO_BIN") {
        return PathBuf::from(bin);
    }
    // This test binary is target/<profile>/deps/it-<hash>.
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("sygno");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bin sygno` first (scripts/test does)",
        bin.display()
    );
    bin
}

fn random_key() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

/// Keys made fresh for each test run.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    pub(crate) write: String,
    pub(crate) write2: String,
    pub(crate) read: String,
    pub(crate) admin: String,
}

impl Keys {
    pub(crate) fn random() -> Self {
        Keys {
            write: random_key(),
            write2: random_key(),
            read: random_key(),
            admin: random_key(),
        }
    }

    pub(crate) fn spec(&self) -> String {
        format!(
            "write={},write={},read={},admin={}",
            self.write, self.write2, self.read, self.admin
        )
    }
}

/// The HTTP side of a running server; cheap to clone into tasks.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) base: String,
    pub(crate) keys: Keys,
    pub(crate) client: reqwest::Client,
}

/// A running `sygno serve`; derefs to its [`Api`]. Killed when dropped.
pub(crate) struct TestApp {
    pub(crate) api: Api,
    child: Child,
}

impl std::ops::Deref for TestApp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// Starts `sygno serve` on `data_dir` and waits until it listens.
pub(crate) async fn spawn_app(data_dir: &Path, keys: &Keys) -> TestApp {
    let show_logs = std::env::var_os("TEST_LOG").is_some();
    let mut child = Command::new(sygno_bin())
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("SYGNO_API_KEYS", keys.spec())
        .env("RUST_LOG", if show_logs { "info" } else { "warn" })
        .stdout(Stdio::piped())
        .stderr(if show_logs {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sygno");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let base = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(rest) = line.strip_prefix("sygno listening on ") {
                return rest.split_whitespace().next().map(str::to_owned);
            }
        }
        None
    })
    .await
    .expect("sygno did not start within 60 s")
    .expect("sygno exited before listening");
    // Keep draining stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    TestApp {
        api: Api {
            base,
            keys: keys.clone(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        },
        child,
    }
}

impl Api {
    pub(crate) async fn post(
        &self,
        path: &str,
        key: &str,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("x-api-key", key)
            .json(body);
        if let Some(k) = idempotency_key {
            request = request.header("Idempotency-Key", k);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    pub(crate) async fn write_raw(
        &self,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> (u16, Value) {
        self.post("/source/write_raw", &self.keys.write, body, idempotency_key)
            .await
    }

    pub(crate) async fn expose(&self, kind: &str) -> (u16, Value) {
        self.post(
            "/source/expose",
            &self.keys.read,
            &json!({ "type": kind }),
            None,
        )
        .await
    }

    pub(crate) async fn expose_text(&self, kind: &str) -> String {
        self.client
            .post(format!("{}/source/expose", self.base))
            .header("x-api-key", &self.keys.read)
            .json(&json!({ "type": kind }))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("text")
    }

    pub(crate) async fn admin(&self, method: reqwest::Method) -> (u16, Value) {
        let response = self
            .client
            .request(method, format!("{}/admin/rebuild", self.base))
            .header("x-api-key", &self.keys.admin)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }
}

impl TestApp {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// SIGKILL: no shutdown code runs.
    pub(crate) async fn kill9(mut self) {
        self.child.kill().await.expect("kill");
    }

    /// SIGTERM, then waits for a clean exit.
    pub(crate) async fn terminate(mut self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("sygno did not stop within 30 s of SIGTERM")
            .expect("wait");
        assert!(exit.success(), "sygno exited with {exit}");
    }
}

/// Polls `probe` every 20 ms until it returns `Some`, for at most `limit`.
pub(crate) async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(crate) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("in range")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(crate) fn parse_ms(text: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text.as_str().expect("string"))
        .expect("RFC 3339")
        .timestamp_millis()
}
