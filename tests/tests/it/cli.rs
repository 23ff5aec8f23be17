//! The command line is part of the contract: flags, env, help, keys.

use crate::helpers::sygno_bin;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

async fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(sygno_bin());
    command
        .args(args)
        .env_remove("SYGNO_API_KEYS")
        .env_remove("SYGNO_ADDR")
        .env_remove("SYGNO_DATA_DIR")
        .env_remove("SYGNO_STORE")
        .env_remove("SYGNO_TABLE");
    for (k, v) in env {
        command.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("finished")
        .expect("ran")
}

#[tokio::test]
async fn help_names_every_flag_and_its_env() {
    let top = run(&["--help"], &[]).await;
    assert!(top.status.success());
    let text = String::from_utf8_lossy(&top.stdout);
    assert!(text.contains("serve") && text.contains("rebuild"), "{text}");
    let serve = run(&["serve", "--help"], &[]).await;
    let text = String::from_utf8_lossy(&serve.stdout);
    for flag in [
        "--addr",
        "SYGNO_ADDR",
        "--data-dir",
        "SYGNO_DATA_DIR",
        "--dev",
        "127.0.0.1:5005",
        "--store",
        "SYGNO_STORE",
        "--table",
        "SYGNO_TABLE",
        "--rebuild-settle-secs",
    ] {
        assert!(text.contains(flag), "serve --help lacks {flag}: {text}");
    }
    let rebuild = run(&["rebuild", "--help"], &[]).await;
    let text = String::from_utf8_lossy(&rebuild.stdout);
    for flag in ["--data-dir", "--store", "--table", "--force"] {
        assert!(text.contains(flag), "rebuild --help lacks {flag}: {text}");
    }
}

#[tokio::test]
async fn the_dynamodb_store_needs_a_table() {
    let out = run(&["serve", "--store", "dynamodb", "--dev"], &[]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--table"), "{stderr}");
}

#[tokio::test]
async fn no_keys_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let out = run(&["serve", "--addr", "127.0.0.1:0", "--data-dir", data], &[]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SYGNO_API_KEYS") && err.contains("--dev"),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_keys_name_the_entry_not_the_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let out = run(
        &["serve", "--addr", "127.0.0.1:0", "--data-dir", data],
        &[("SYGNO_API_KEYS", "write=first-secret,reed=hunter2")],
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("entry 2") && err.contains("reed"), "{err}");
    assert!(
        !err.contains("hunter2") && !err.contains("first-secret"),
        "secret leaked: {err}"
    );
}

#[tokio::test]
async fn dev_mode_prints_working_random_keys_and_env_configures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(sygno_bin())
        .args(["serve", "--dev"])
        .env_remove("SYGNO_API_KEYS")
        .env("SYGNO_ADDR", "127.0.0.1:0")
        .env("SYGNO_DATA_DIR", dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut write, mut read, mut base) = (None, None, None);
    while base.is_none() {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("output in time")
            .expect("read")
            .expect("a line before exit");
        if let Some(k) = line.trim().strip_prefix("write key:") {
            write = Some(k.trim().to_owned());
        } else if let Some(k) = line.trim().strip_prefix("read key:") {
            read = Some(k.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("sygno listening on ") {
            assert!(
                rest.contains(dir.path().to_str().expect("utf-8")),
                "SYGNO_DATA_DIR honoured: {rest}"
            );
            base = rest.split_whitespace().next().map(str::to_owned);
        }
    }
    let (write, read, base) = (
        write.expect("write key"),
        read.expect("read key"),
        base.expect("address"),
    );
    assert_eq!(write.len(), 48);
    assert_ne!(write, read);
    assert!(dir.path().join("events.db").exists());
    let client = reqwest::Client::new();
    let status = |key: &str, path: &str, body: &'static str| {
        let request = client
            .post(format!("{base}{path}"))
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .body(body);
        async move { request.send().await.expect("request").status().as_u16() }
    };
    assert_eq!(
        status(&write, "/source/write_raw", r#"{"data": {"x": 1}}"#).await,
        200
    );
    assert_eq!(
        status(&read, "/source/write_raw", r#"{"data": {"x": 1}}"#).await,
        403
    );
    assert_eq!(
        status(&read, "/source/expose", r#"{"type": "7d_average"}"#).await,
        200
    );
    child.kill().await.expect("kill");
}

#[tokio::test]
async fn table_create_is_idempotent() {
    let Ok(endpoint) = std::env::var("SYGNO_TEST_DYNAMODB_ENDPOINT") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "SYGNO_TEST_DYNAMODB_ENDPOINT is not set: run scripts/test"
        );
        return;
    };
    let table = format!("sygno-cli-{}", std::process::id());
    // Credentials made up for this run: the test server accepts any.
    let secret = format!("test-secret-{}", std::process::id());
    let env = [
        ("AWS_ENDPOINT_URL_DYNAMODB", endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "sygno-test"),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
    ];
    for attempt in 0..2 {
        let out = run(&["table", "create", "--table", &table], &env).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "attempt {attempt}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("table {table} is ready")),
            "{stdout}"
        );
    }
    let help = run(&["table", "create", "--help"], &[]).await;
    assert!(String::from_utf8_lossy(&help.stdout).contains("SYGNO_TABLE"));
}
