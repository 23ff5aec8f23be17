//! `spawn_app`: a `sygno serve` process on a free port, and one method per
//! endpoint. [`TestStore`] and [`on_every_store!`] run a test on each
//! store: the embedded one in a temporary directory, and DynamoDB (a fresh
//! table on the test server `scripts/test` starts).

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

/// The stores a test can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreKind {
    Embedded,
    Dynamodb,
}

/// A fresh store for one test.
pub(crate) enum TestStore {
    Embedded(tempfile::TempDir),
    /// A table on the DynamoDB test server.
    Dynamodb {
        table: String,
        env: Vec<(String, String)>,
    },
}

impl TestStore {
    /// `None` (the test is skipped, saying so) when the DynamoDB test
    /// server is missing outside CI.
    pub(crate) async fn new(kind: StoreKind) -> Option<TestStore> {
        match kind {
            StoreKind::Embedded => Some(TestStore::Embedded(tempfile::tempdir().expect("tempdir"))),
            StoreKind::Dynamodb => {
                let endpoint = sygno_shared::store::dynamo::testing::endpoint()?;
                let table = sygno_shared::store::dynamo::testing::table_name("sygno-it");
                // Made-up credentials: the test server accepts any.
                let env = vec![
                    ("AWS_ENDPOINT_URL".to_owned(), endpoint),
                    ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
                    ("AWS_ACCESS_KEY_ID".to_owned(), "sygno-test".to_owned()),
                    (
                        "AWS_SECRET_ACCESS_KEY".to_owned(),
                        format!("test-secret-{}", std::process::id()),
                    ),
                    ("SYGNO_REBUILD_SETTLE_SECS".to_owned(), "1".to_owned()),
                ];
                let created = Command::new(sygno_bin())
                    .args(["table", "create", "--table", &table])
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .output()
                    .await
                    .expect("sygno table create");
                assert!(
                    created.status.success(),
                    "{}",
                    String::from_utf8_lossy(&created.stderr)
                );
                Some(TestStore::Dynamodb { table, env })
            }
        }
    }

    /// The `sygno` arguments that select this store.
    pub(crate) fn args(&self) -> Vec<std::ffi::OsString> {
        match self {
            TestStore::Embedded(dir) => vec!["--data-dir".into(), dir.path().into()],
            TestStore::Dynamodb { table, .. } => vec![
                "--store".into(),
                "dynamodb".into(),
                "--table".into(),
                table.into(),
            ],
        }
    }

    /// The environment `sygno` needs for this store.
    pub(crate) fn env(&self) -> &[(String, String)] {
        match self {
            TestStore::Embedded(_) => &[],
            TestStore::Dynamodb { env, .. } => env,
        }
    }

    /// Starts `sygno serve` on this store.
    pub(crate) async fn spawn(&self, keys: &Keys) -> TestApp {
        spawn_with(self.args(), self.env(), keys).await
    }
}

/// Runs each named `async fn(StoreKind)` as two tests, `<name>::embedded`
/// and `<name>::dynamodb`.
macro_rules! on_every_store {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn embedded() {
                super::$name(crate::helpers::StoreKind::Embedded).await
            }
            #[tokio::test]
            async fn dynamodb() {
                super::$name(crate::helpers::StoreKind::Dynamodb).await
            }
        }
    )+};
}
pub(crate) use on_every_store;

/// Starts `sygno serve` on `data_dir` and waits until it listens.
pub(crate) async fn spawn_app(data_dir: &Path, keys: &Keys) -> TestApp {
    spawn_with(vec!["--data-dir".into(), data_dir.into()], &[], keys).await
}

/// `sygno serve` on `data_dir` with `args` added, its file-descriptor
/// limit (soft and hard) set to `fd_limit` if given.
pub(crate) async fn spawn_app_with(
    data_dir: &Path,
    keys: &Keys,
    args: &[&str],
    fd_limit: Option<u32>,
) -> TestApp {
    let mut all: Vec<std::ffi::OsString> = vec!["--data-dir".into(), data_dir.into()];
    all.extend(args.iter().map(Into::into));
    launch(all, &[], keys, fd_limit).await
}

async fn spawn_with(
    store_args: Vec<std::ffi::OsString>,
    env: &[(String, String)],
    keys: &Keys,
) -> TestApp {
    launch(store_args, env, keys, None).await
}

async fn launch(
    store_args: Vec<std::ffi::OsString>,
    env: &[(String, String)],
    keys: &Keys,
    fd_limit: Option<u32>,
) -> TestApp {
    let show_logs = std::env::var_os("TEST_LOG").is_some();
    let mut command = match fd_limit {
        // The shell sets the limit, then becomes sygno (same pid).
        Some(limit) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                .arg(sygno_bin());
            c
        }
        None => Command::new(sygno_bin()),
    };
    let mut child = command
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(store_args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("SYGNO_API_KEYS", keys.spec())
        .env(
            "RUST_LOG",
            std::env::var("TEST_LOG")
                .ok()
                .filter(|v| v != "1")
                .unwrap_or_else(|| if show_logs { "info" } else { "warn" }.to_owned()),
        )
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

    /// `expose` of one source's aggregate.
    pub(crate) async fn expose_source(&self, kind: &str, name: &str) -> (u16, Value) {
        self.post(
            "/source/expose",
            &self.keys.read,
            &json!({ "type": kind, "name": name }),
            None,
        )
        .await
    }

    /// `GET path` with `query`, read key.
    pub(crate) async fn get_json(&self, path: &str, query: &[(&str, String)]) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .query(query)
            .header("x-api-key", &self.keys.read)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// `GET /source/sources`.
    pub(crate) async fn sources(&self) -> (u16, Value) {
        self.get_json("/source/sources", &[]).await
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
    pub(crate) async fn terminate(self) {
        self.send_term();
        self.clean_exit().await;
    }

    /// Sends SIGTERM (a graceful shutdown).
    pub(crate) fn send_term(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
    }

    /// Waits (at most 30 s) for the process to exit, successfully.
    pub(crate) async fn clean_exit(mut self) {
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
