use super::*;
use crate::routes::write_raw::IDEMPOTENCY_KEY_HEADER;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use sygno_aggregator::control;
use sygno_aggregator::Worker;
use sygno_shared::domain::event::{Appended, NewEvent};
use sygno_shared::domain::limit::DEFAULT_MAX_FIELDS;
use sygno_shared::store::embedded::EmbeddedStore;
use sygno_shared::store::{AggregateStore, ChangeFeed, StoreError};
use tower::ServiceExt;

const WRITE: &str = "write-key-for-tests";
const READ: &str = "read-key-for-tests";
const ADMIN: &str = "admin-key-for-tests";
const UNKNOWN: &str = "nobody-configured-this";

struct Harness {
    _dir: tempfile::TempDir,
    store: EmbeddedStore,
    app: Router,
    // Keeps the rebuild channel open, as a running worker would.
    _requests: control::RebuildRequests,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let keys = ApiKeys::parse(&format!("write={WRITE},read={READ},admin={ADMIN}")).expect("keys");
    let (rebuild, requests) = control::channel();
    let app = app(AppState {
        keys: Arc::new(keys),
        log: Arc::new(store.clone()),
        views: Arc::new(store.clone()),
        rebuild: Some(rebuild),
        metrics: None,
        bodies: crate::body::BodyReader::default(),
        reads: Default::default(),
        retention: Default::default(),
    });
    Harness {
        _dir: dir,
        store,
        app,
        _requests: requests,
    }
}

struct Call<'a> {
    method: &'a str,
    path: &'a str,
    key: Option<&'a str>,
    headers: Vec<(&'a str, &'a str)>,
    body: Vec<u8>,
}

fn post<'a>(path: &'a str, key: Option<&'a str>, body: impl Into<Vec<u8>>) -> Call<'a> {
    Call {
        method: "POST",
        path,
        key,
        headers: vec![("content-type", "application/json")],
        body: body.into(),
    }
}

async fn send(app: &Router, call: Call<'_>) -> (StatusCode, Value) {
    let mut request = Request::builder().method(call.method).uri(call.path);
    if let Some(key) = call.key {
        request = request.header("x-api-key", key);
    }
    for (name, value) in call.headers {
        request = request.header(name, value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(call.body)).expect("request"))
        .await
        .expect("infallible");
    crate::test_support::json_response(response).await
}

/// Every body is the envelope, its status equal to the HTTP status.
#[track_caller]
fn assert_envelope(status: StatusCode, body: &Value) {
    assert_eq!(body["status"], json!(status.as_u16()), "{body}");
    assert!(
        body["description"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    assert!(body.get("data").is_some(), "{body}");
}

#[track_caller]
fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_envelope(status, body);
    assert_eq!(body["data"]["error"], json!(code), "{body}");
}

const EVENT: &str = r#"{"data": {"x": 1}}"#;

#[tokio::test]
async fn auth_matrix_covers_every_route_and_key() {
    let h = harness();
    let keys = [
        ("none", None),
        ("unknown", Some(UNKNOWN)),
        ("write", Some(WRITE)),
        ("read", Some(READ)),
        ("admin", Some(ADMIN)),
    ];
    struct Route {
        method: &'static str,
        path: &'static str,
        body: &'static str,
        role: &'static str,
        ok: StatusCode,
    }
    let routes = [
        Route {
            method: "POST",
            path: "/source/write_raw",
            body: EVENT,
            role: "write",
            ok: StatusCode::OK,
        },
        Route {
            method: "POST",
            path: "/sygno/write_raw",
            body: EVENT,
            role: "write",
            ok: StatusCode::OK,
        },
        Route {
            method: "POST",
            path: "/source/expose",
            body: r#"{"type": "24h_average"}"#,
            role: "read",
            ok: StatusCode::OK,
        },
        Route {
            method: "POST",
            path: "/sygno/expose",
            body: r#"{"type": "7d_devt"}"#,
            role: "read",
            ok: StatusCode::OK,
        },
        Route {
            method: "GET",
            path: "/admin/rebuild",
            body: "",
            role: "admin",
            ok: StatusCode::OK,
        },
        Route {
            method: "POST",
            path: "/admin/rebuild",
            body: "",
            role: "admin",
            ok: StatusCode::ACCEPTED,
        },
    ];
    for route in &routes {
        for (who, key) in keys {
            let call = Call {
                method: route.method,
                path: route.path,
                key,
                headers: vec![("content-type", "application/json")],
                body: route.body.into(),
            };
            let (status, body) = send(&h.app, call).await;
            let context = format!("{} {} as {who}", route.method, route.path);
            match who {
                "none" | "unknown" => {
                    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized")
                }
                _ if who == route.role => {
                    assert_eq!(status, route.ok, "{context}: {body}");
                    assert_envelope(status, &body);
                }
                _ => assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden"),
            }
        }
    }
    // Public routes need no key.
    for path in ["/health", "/openapi.json"] {
        let call = Call {
            method: "GET",
            path,
            key: None,
            headers: vec![],
            body: vec![],
        };
        let request = Request::builder()
            .method(call.method)
            .uri(call.path)
            .body(Body::empty())
            .expect("request");
        let response = h.app.clone().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

/// One bad request: what it must answer, and that it stores nothing.
struct Bad {
    what: &'static str,
    call: Call<'static>,
    status: StatusCode,
    code: &'static str,
}

fn bad(what: &'static str, call: Call<'static>, status: StatusCode, code: &'static str) -> Bad {
    Bad {
        what,
        call,
        status,
        code,
    }
}

fn with_header(mut call: Call<'static>, name: &'static str, value: &'static str) -> Call<'static> {
    call.headers.retain(|(n, _)| *n != name);
    call.headers.push((name, value));
    call
}

fn nested(levels: usize) -> String {
    format!(
        r#"{{"data": {}1{}}}"#,
        "{\"a\":".repeat(levels),
        "}".repeat(levels)
    )
}

fn bad_inputs() -> Vec<Bad> {
    use StatusCode as S;
    let w = "/source/write_raw";
    let e = "/source/expose";
    let huge = format!(r#"{{"data": {{"s": "{}"}}}}"#, "x".repeat(64 * 1024));
    let future = (chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339();
    let long_name = format!(r#"{{"data": {{}}, "name": "{}"}}"#, "n".repeat(129));
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let fields = |n: usize| {
        let pairs: Vec<String> = (0..n).map(|i| format!(r#""f{i}": {i}"#)).collect();
        format!(r#"{{"data": {{{}}}}}"#, pairs.join(","))
    };
    let long_path = format!(r#"{{"data": {{"a": {{"{}": 1}}}}}}"#, "p".repeat(255));
    let docs = |path: &'static str| Call {
        method: "GET",
        path,
        key: None,
        headers: vec![],
        body: vec![],
    };
    vec![
        bad(
            "no key",
            post(w, None, EVENT),
            S::UNAUTHORIZED,
            "unauthorized",
        ),
        bad(
            "unknown key",
            post(w, Some(UNKNOWN), EVENT),
            S::UNAUTHORIZED,
            "unauthorized",
        ),
        bad(
            "read key writes",
            post(w, Some(READ), EVENT),
            S::FORBIDDEN,
            "forbidden",
        ),
        bad(
            "no key beats size",
            post(w, None, huge.clone()),
            S::UNAUTHORIZED,
            "unauthorized",
        ),
        bad(
            "role beats size",
            post(w, Some(READ), huge.clone()),
            S::FORBIDDEN,
            "forbidden",
        ),
        bad(
            "body over 64 KiB",
            post(w, Some(WRITE), huge.clone()),
            S::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        bad(
            "size beats syntax",
            post(w, Some(WRITE), "{".repeat(70_000)),
            S::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        bad(
            "text/plain",
            with_header(post(w, Some(WRITE), EVENT), "content-type", "text/plain"),
            S::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        bad(
            "form encoded",
            with_header(
                post(w, Some(WRITE), EVENT),
                "content-type",
                "application/x-www-form-urlencoded",
            ),
            S::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        bad(
            "empty body",
            post(w, Some(WRITE), ""),
            S::BAD_REQUEST,
            "invalid_json",
        ),
        bad(
            "truncated",
            post(w, Some(WRITE), r#"{"data": {"#),
            S::BAD_REQUEST,
            "invalid_json",
        ),
        bad(
            "NaN",
            post(w, Some(WRITE), r#"{"data": {"x": NaN}}"#),
            S::BAD_REQUEST,
            "invalid_json",
        ),
        bad(
            "Infinity",
            post(w, Some(WRITE), r#"{"data": {"x": Infinity}}"#),
            S::BAD_REQUEST,
            "invalid_json",
        ),
        bad(
            "-Infinity",
            post(w, Some(WRITE), r#"{"data": {"x": -Infinity}}"#),
            S::BAD_REQUEST,
            "invalid_json",
        ),
        bad(
            "beyond f64",
            post(w, Some(WRITE), r#"{"data": {"x": 1e309}}"#),
            S::BAD_REQUEST,
            "invalid_json",
        ),
        bad(
            "beyond f64 negative",
            post(w, Some(WRITE), r#"{"data": {"x": -2e308}}"#),
            S::BAD_REQUEST,
            "invalid_json",
        ),
        bad(
            "trailing garbage",
            post(w, Some(WRITE), r#"{"data": {}} x"#),
            S::BAD_REQUEST,
            "invalid_json",
        ),
        bad(
            "trailing comma",
            post(w, Some(WRITE), r#"{"data": {"x": 1,}}"#),
            S::BAD_REQUEST,
            "invalid_json",
        ),
        bad(
            "single quotes",
            post(w, Some(WRITE), "{'data': {}}"),
            S::BAD_REQUEST,
            "invalid_json",
        ),
        bad(
            "invalid UTF-8",
            post(w, Some(WRITE), b"{\"data\": {\"s\": \"\xff\"}}".to_vec()),
            S::BAD_REQUEST,
            "invalid_json",
        ),
        bad(
            "body is an array",
            post(w, Some(WRITE), "[]"),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "body is a number",
            post(w, Some(WRITE), "42"),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "data missing",
            post(w, Some(WRITE), "{}"),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "data null",
            post(w, Some(WRITE), r#"{"data": null}"#),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "data array",
            post(w, Some(WRITE), r#"{"data": [1, 2]}"#),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "data string",
            post(w, Some(WRITE), r#"{"data": "x"}"#),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "unknown field",
            post(w, Some(WRITE), r#"{"data": {}, "source": "a"}"#),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "event_time not RFC 3339",
            post(
                w,
                Some(WRITE),
                r#"{"data": {}, "event_time": "01/05/2021"}"#,
            ),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "event_time a number",
            post(w, Some(WRITE), r#"{"data": {}, "event_time": 1619863670}"#),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "event_time 10 min ahead",
            post(
                w,
                Some(WRITE),
                leak(format!(r#"{{"data": {{}}, "event_time": "{future}"}}"#)),
            ),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "name empty",
            post(w, Some(WRITE), r#"{"data": {}, "name": ""}"#),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "name 129 chars",
            post(w, Some(WRITE), leak(long_name)),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "name a number",
            post(w, Some(WRITE), r#"{"data": {}, "name": 3}"#),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "33 levels deep",
            post(w, Some(WRITE), nested(33)),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "1000 levels deep",
            post(w, Some(WRITE), nested(1000)),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "table row not a pair",
            post(
                w,
                Some(WRITE),
                r#"{"data": {"rows": [["Variable", "Value"], ["t", 1], ["u", 2, 3]]}}"#,
            ),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "table row name not a string",
            post(
                w,
                Some(WRITE),
                r#"{"data": {"rows": [["Variable", "Value"], [5, 1]]}}"#,
            ),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "table bad ts",
            post(
                w,
                Some(WRITE),
                r#"{"data": {"rows": [["Variable", "Value"]], "ts": "yesterday"}}"#,
            ),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "Idempotency-Key too long",
            with_header(
                post(w, Some(WRITE), EVENT),
                IDEMPOTENCY_KEY_HEADER,
                leak("k".repeat(129)),
            ),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "Idempotency-Key with a space",
            with_header(post(w, Some(WRITE), EVENT), IDEMPOTENCY_KEY_HEADER, "a b"),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "Idempotency-Key empty",
            with_header(post(w, Some(WRITE), EVENT), IDEMPOTENCY_KEY_HEADER, ""),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "syntax beats the key check",
            with_header(post(w, Some(WRITE), "{"), IDEMPOTENCY_KEY_HEADER, ""),
            S::BAD_REQUEST,
            "invalid_json",
        ),
        bad(
            "expose without key",
            post(e, None, r#"{"type": "latest"}"#),
            S::UNAUTHORIZED,
            "unauthorized",
        ),
        bad(
            "expose with write key",
            post(e, Some(WRITE), r#"{"type": "latest"}"#),
            S::FORBIDDEN,
            "forbidden",
        ),
        bad(
            "expose not JSON",
            post(e, Some(READ), "type=latest"),
            S::BAD_REQUEST,
            "invalid_json",
        ),
        bad(
            "expose unknown type",
            post(e, Some(READ), r#"{"type": "30d_average"}"#),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "expose type missing",
            post(e, Some(READ), "{}"),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "expose type a number",
            post(e, Some(READ), r#"{"type": 24}"#),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "expose latest before any event",
            post(e, Some(READ), r#"{"type": "latest"}"#),
            S::NOT_FOUND,
            "not_found",
        ),
        bad(
            "1,001 numeric fields",
            post(w, Some(WRITE), fields(1_001)),
            S::UNPROCESSABLE_ENTITY,
            "too_many_fields",
        ),
        bad(
            "a field path of 257 bytes",
            post(w, Some(WRITE), long_path),
            S::UNPROCESSABLE_ENTITY,
            "field_path_too_long",
        ),
        bad(
            "two spellings of one path",
            post(w, Some(WRITE), r#"{"data": {"a.b": 1, "a": {"b": 2}}}"#),
            S::UNPROCESSABLE_ENTITY,
            "field_collision",
        ),
        bad(
            "two spellings in a table",
            post(
                w,
                Some(WRITE),
                r#"{"data": {"rows": [["Variable", "Value"], ["a.b", 1], ["a", {"b": 2}]]}}"#,
            ),
            S::UNPROCESSABLE_ENTITY,
            "field_collision",
        ),
        bad(
            "a number out of the f64 range in data",
            post(w, Some(WRITE), r#"{"data": {"x": 1e400}}"#),
            S::BAD_REQUEST,
            "invalid_json",
        ),
        bad(
            "a number out of range beats an unknown field",
            post(w, Some(WRITE), r#"{"data": {}, "extra": -1e999}"#),
            S::BAD_REQUEST,
            "invalid_json",
        ),
        bad(
            "an out-of-range number in name beats its type",
            post(w, Some(WRITE), r#"{"data": {}, "name": 2e308}"#),
            S::BAD_REQUEST,
            "invalid_json",
        ),
        bad(
            "year 0000",
            post(
                w,
                Some(WRITE),
                r#"{"data": {}, "event_time": "0000-06-01T00:00:00Z"}"#,
            ),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "year 0001 minus an hour, in UTC",
            post(
                w,
                Some(WRITE),
                r#"{"data": {}, "event_time": "0001-01-01T00:30:00+01:00"}"#,
            ),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "expose body an array",
            post(e, Some(READ), r#"["latest"]"#),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "expose body a string",
            post(e, Some(READ), r#""latest""#),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "expose name a number",
            post(e, Some(READ), r#"{"type": "latest", "name": 7}"#),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "expose name empty",
            post(e, Some(READ), r#"{"type": "latest", "name": ""}"#),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "expose of a source never written",
            post(e, Some(READ), r#"{"type": "7d_stats", "name": "nobody"}"#),
            S::NOT_FOUND,
            "unknown_source",
        ),
        bad(
            "sources without key",
            Call {
                method: "GET",
                path: "/source/sources",
                key: None,
                headers: vec![],
                body: vec![],
            },
            S::UNAUTHORIZED,
            "unauthorized",
        ),
        bad(
            "sources with the write key",
            Call {
                method: "GET",
                path: "/sygno/sources",
                key: Some(WRITE),
                headers: vec![],
                body: vec![],
            },
            S::FORBIDDEN,
            "forbidden",
        ),
        bad(
            "unknown path under /docs",
            docs("/docs/no-such-file.js"),
            S::NOT_FOUND,
            "not_found",
        ),
        bad(
            "a path under /docs/",
            docs("/docs/a/b/c"),
            S::NOT_FOUND,
            "not_found",
        ),
        bad(
            "unknown route",
            post("/source/delete", Some(WRITE), EVENT),
            S::NOT_FOUND,
            "not_found",
        ),
        bad(
            "wrong method",
            Call {
                method: "GET",
                path: w,
                key: Some(WRITE),
                headers: vec![],
                body: vec![],
            },
            S::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        // Syntax (400) before schema (422) on every route, and a missing
        // field a 422, never a 500.
        bad(
            "series: out-of-range number beside an unknown field",
            post(
                "/source/series",
                Some(READ),
                r#"{"interval": "1h", "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "x": 1e400}"#,
            ),
            S::BAD_REQUEST,
            "invalid_json",
        ),
        bad(
            "expose: trailing garbage",
            post(e, Some(READ), r#"{"type": "latest"} x"#),
            S::BAD_REQUEST,
            "invalid_json",
        ),
        bad(
            "grafana query: empty body is a missing range",
            post("/grafana/query", Some(READ), ""),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        bad(
            "grafana query: out-of-range number in an ignored field",
            post(
                "/grafana/query",
                Some(READ),
                r#"{"range": {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}, "targets": [], "x": 1e400}"#,
            ),
            S::BAD_REQUEST,
            "invalid_json",
        ),
        bad(
            "grafana query: trailing garbage after a schema error",
            post("/grafana/query", Some(READ), "{}garbage"),
            S::BAD_REQUEST,
            "invalid_json",
        ),
        bad(
            "grafana query: invalid UTF-8 in a string",
            post(
                "/grafana/query",
                Some(READ),
                b"{\"range\": {\"from\": \"\xff\", \"to\": \"x\"}}".to_vec(),
            ),
            S::BAD_REQUEST,
            "invalid_json",
        ),
        bad(
            "grafana metrics: not JSON",
            post("/grafana/metrics", Some(READ), "{"),
            S::BAD_REQUEST,
            "invalid_json",
        ),
        bad(
            "wrong method on expose",
            Call {
                method: "PUT",
                path: e,
                key: Some(READ),
                headers: vec![],
                body: vec![],
            },
            S::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ]
}

/// Between a new source's first batch (its `latest` row) and the next
/// render (its window rows), the source is known: an empty window, not
/// 404.
#[tokio::test]
async fn a_source_whose_windows_are_not_rendered_yet_has_empty_windows() {
    use sygno_shared::domain::expose::ExposeKind;
    use sygno_shared::domain::fold::Scope;
    use sygno_shared::store::AggregateCommit;
    let h = harness();
    let gh = Scope::Source("gh".into());
    h.store
        .commit(AggregateCommit {
            expected_checkpoint: Some(0),
            checkpoint: Some(0),
            views: vec![(gh, ExposeKind::Latest, r#"{"id":"x"}"#.into())],
            ..AggregateCommit::default()
        })
        .await
        .expect("commit");
    let body = r#"{"type": "24h_stats", "name": "gh"}"#;
    let (status, doc) = send(&h.app, post("/source/expose", Some(READ), body)).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["data"]["count"], 0, "{doc}");
    let body = r#"{"type": "24h_stats", "name": "other"}"#;
    let (status, doc) = send(&h.app, post("/source/expose", Some(READ), body)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{doc}");
}

#[tokio::test]
async fn bad_inputs_get_clear_errors_and_store_nothing() {
    let h = harness();
    let cases = bad_inputs();
    assert!(cases.len() >= 30);
    for case in cases {
        let before = h.store.head().await.expect("head");
        let (status, body) = send(&h.app, case.call).await;
        assert_eq!(status, case.status, "{}: {body}", case.what);
        assert_envelope(status, &body);
        assert_eq!(
            body["data"]["error"],
            json!(case.code),
            "{}: {body}",
            case.what
        );
        let description = body["description"].as_str().unwrap_or_default();
        for leak in ["rusqlite", "sqlite", "panicked", "src/", WRITE, READ] {
            assert!(
                !description.contains(leak),
                "{}: leaks {leak}: {description}",
                case.what
            );
        }
        assert_eq!(
            h.store.head().await.expect("head"),
            before,
            "{}: something was stored",
            case.what
        );
    }
}

#[tokio::test]
async fn errors_name_the_field() {
    let h = harness();
    let cases = [
        (r#"{"data": {}, "event_time": "x"}"#, "event_time"),
        (r#"{"data": {}, "nme": "x"}"#, "nme"),
        (
            r#"{"data": {"rows": [["Variable", "Value"], ["a", 1], "b"]}}"#,
            "data.rows[2]",
        ),
        (
            r#"{"data": {"rows": [["Variable", "Value"]], "ts": "x"}}"#,
            "data.ts",
        ),
        ("{}", "data"),
    ];
    for (input, field) in cases {
        let (_, body) = send(&h.app, post("/source/write_raw", Some(WRITE), input)).await;
        let description = body["description"].as_str().unwrap_or_default();
        assert!(description.contains(field), "{input}: {description}");
    }
}

#[tokio::test]
async fn write_then_step_then_read() {
    let h = harness();
    let table = r#"{"data": {"name": "_ws_source_meteo", "rows": [["Variable", "Value"], ["external_temperature_c", 9.1387], ["wind_direction_compass", {"type": "hortimax.synopta.enum", "key": 8789, "value": "Actief"}]], "pt": 0}}"#;
    let (status, body) = send(&h.app, post("/sygno/write_raw", Some(WRITE), table)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["duplicate"], json!(false));
    let event_id = body["data"]["event_id"].clone();
    let time = body["data"]["event_time"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        time.ends_with('Z') && time.len() == 24,
        "millisecond UTC: {time}"
    );

    let feed: Arc<dyn ChangeFeed> = Arc::new(h.store.clone());
    let aggregates: Arc<dyn AggregateStore> = Arc::new(h.store.clone());
    let now = chrono::Utc::now().timestamp_millis();
    let mut worker = Worker::start(feed, aggregates, DEFAULT_MAX_FIELDS, now)
        .await
        .expect("worker");
    assert_eq!(worker.step(now).await.expect("step"), 1);

    let (status, body) = send(
        &h.app,
        post("/source/expose", Some(READ), r#"{"type": "latest"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["event_id"], event_id);
    assert_eq!(body["data"]["name"], json!("_ws_source_meteo"));
    let sent: Value = serde_json::from_str(table).expect("json");
    assert_eq!(
        body["data"]["data"], sent["data"],
        "latest returns data unchanged"
    );

    let (_, body) = send(
        &h.app,
        post("/source/expose", Some(READ), r#"{"type": "24_average"}"#),
    )
    .await;
    assert_eq!(body["data"]["type"], json!("24h_average"));
    assert_eq!(body["data"]["count"], json!(1));
    assert_eq!(
        body["data"]["fields"]["external_temperature_c"],
        json!({"count": 1, "value": 9.1387})
    );
    assert_eq!(
        body["data"]["fields"]["wind_direction_compass.key"],
        json!({"count": 1, "value": 8789.0})
    );
    let (_, body) = send(
        &h.app,
        post("/source/expose", Some(READ), r#"{"type": "7d_devt"}"#),
    )
    .await;
    assert_eq!(
        body["data"]["fields"]["external_temperature_c"],
        json!({"count": 1, "value": null})
    );
}

#[tokio::test]
async fn idempotency_key_returns_the_first_event() {
    let h = harness();
    let first = with_header(
        post("/source/write_raw", Some(WRITE), EVENT),
        IDEMPOTENCY_KEY_HEADER,
        "order-1",
    );
    let (_, a) = send(&h.app, first).await;
    let again = with_header(
        post("/source/write_raw", Some(WRITE), r#"{"data": {"x": 2}}"#),
        IDEMPOTENCY_KEY_HEADER,
        "order-1",
    );
    let (status, b) = send(&h.app, again).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(b["data"]["duplicate"], json!(true));
    assert_eq!(a["data"]["event_id"], b["data"]["event_id"]);
    assert_eq!(a["data"]["event_time"], b["data"]["event_time"]);
    assert_eq!(h.store.head().await.expect("head"), 1);
}

#[tokio::test]
async fn a_second_rebuild_while_one_runs_is_a_conflict() {
    let h = harness();
    let call = || Call {
        method: "POST",
        path: "/admin/rebuild",
        key: Some(ADMIN),
        headers: vec![],
        body: vec![],
    };
    let (status, body) = send(&h.app, call()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["data"]["state"], json!("running"));
    let (status, body) = send(&h.app, call()).await;
    assert_error(status, &body, StatusCode::CONFLICT, "rebuild_running");
}

#[tokio::test]
async fn openapi_lists_every_route() {
    let h = harness();
    let request = Request::builder()
        .uri("/openapi.json")
        .body(Body::empty())
        .expect("request");
    let response = h.app.clone().oneshot(request).await.expect("infallible");
    let (_, doc) = crate::test_support::json_response(response).await;
    for path in [
        "/source/write_raw",
        "/sygno/write_raw",
        "/source/expose",
        "/sygno/expose",
        "/health",
        "/admin/rebuild",
        "/source/write_batch",
        "/sygno/write_batch",
        "/source/series",
        "/sygno/series",
        "/source/sources",
        "/metrics",
        "/grafana",
        "/grafana/metrics",
        "/grafana/metric-payload-options",
        "/grafana/query",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    for schema in [
        "WriteRawRequest",
        "WriteBatchRequest",
        "WriteBatchResponse",
        "SeriesRequest",
        "SeriesResponse",
        "SeriesInterval",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "{schema} missing"
        );
    }
    assert!(doc["components"]["securitySchemes"]
        .get("api_key")
        .is_some());
    let request = Request::builder()
        .uri("/docs/")
        .body(Body::empty())
        .expect("request");
    let response = h.app.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
}

/// A store that always fails, for the 503 paths.
struct BrokenStore;

#[async_trait::async_trait]
impl EventLog for BrokenStore {
    async fn append_batch(&self, _: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError> {
        Err(StoreError::Unavailable(
            "disk on fire at /var/secret/path".into(),
        ))
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("disk on fire".into()))
    }
}

#[async_trait::async_trait]
impl ViewStore for BrokenStore {
    async fn view(
        &self,
        _: &sygno_shared::domain::fold::Scope,
        _: sygno_shared::domain::expose::ExposeKind,
    ) -> Result<Option<Arc<str>>, StoreError> {
        Err(StoreError::Unavailable("disk on fire".into()))
    }
    async fn sources_page(
        &self,
        _: Option<&str>,
        _: usize,
    ) -> Result<Vec<(String, Arc<str>)>, StoreError> {
        Err(StoreError::Unavailable("disk on fire".into()))
    }
    async fn summaries(
        &self,
        _: &sygno_shared::domain::fold::Scope,
        _: sygno_shared::domain::tiers::Tier,
        _: std::ops::Range<i64>,
    ) -> Result<Vec<(i64, sygno_shared::domain::summary::Summary)>, StoreError> {
        Err(StoreError::Unavailable("disk on fire".into()))
    }
}

#[tokio::test]
async fn a_store_outage_is_a_503_that_leaks_nothing() {
    let keys = ApiKeys::parse(&format!("write={WRITE},read={READ}")).expect("keys");
    let app = app(AppState {
        keys: Arc::new(keys),
        log: Arc::new(BrokenStore),
        views: Arc::new(BrokenStore),
        rebuild: None,
        metrics: None,
        bodies: crate::body::BodyReader::default(),
        reads: Default::default(),
        retention: Default::default(),
    });
    for call in [
        post("/source/write_raw", Some(WRITE), EVENT),
        post("/source/expose", Some(READ), r#"{"type": "latest"}"#),
        Call {
            method: "GET",
            path: "/health",
            key: None,
            headers: vec![],
            body: vec![],
        },
    ] {
        let (status, body) = send(&app, call).await;
        assert_error(
            status,
            &body,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        );
        assert!(!body.to_string().contains("fire"), "{body}");
    }
}

#[tokio::test]
async fn a_panic_answers_500_in_the_envelope() {
    async fn boom() -> &'static str {
        panic!("internal detail")
    }
    let router: Router = guarded(Router::new().route("/boom", get(boom)));
    let (status, body) = send(
        &router,
        Call {
            method: "GET",
            path: "/boom",
            key: None,
            headers: vec![],
            body: vec![],
        },
    )
    .await;
    assert_error(status, &body, StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert!(!body.to_string().contains("internal detail"));
}

/// A `write_batch` body of `n` small events, the i-th with `x = i`.
fn batch_body(n: usize) -> String {
    let events: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"data": {{"x": {i}}}, "name": "gh-{}"}}"#, i % 3))
        .collect();
    format!(r#"{{"events": [{}]}}"#, events.join(","))
}

#[tokio::test]
async fn a_batch_of_one_or_a_thousand_is_stored_in_order() {
    let h = harness();
    for (n, alias) in [(1, "/source/write_batch"), (1000, "/sygno/write_batch")] {
        let before = h.store.head().await.expect("head");
        let (status, body) = send(&h.app, post(alias, Some(WRITE), batch_body(n))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_envelope(status, &body);
        let answered = body["data"]["events"].as_array().expect("events");
        assert_eq!(answered.len(), n);
        assert!(answered.iter().all(|e| e["duplicate"] == json!(false)));
        let stored = h.store.read_after(before, 2000).await.expect("read");
        assert_eq!(stored.len(), n);
        for (i, (event, answer)) in stored.iter().zip(answered).enumerate() {
            assert_eq!(json!(event.event_id), answer["event_id"]);
            assert_eq!(event.data, format!(r#"{{"x": {i}}}"#));
            assert_eq!(event.name, format!("gh-{}", i % 3));
        }
    }
}

#[tokio::test]
async fn an_oversized_or_overfull_batch_stores_nothing() {
    let h = harness();
    let (status, body) = send(
        &h.app,
        post("/source/write_batch", Some(WRITE), batch_body(1001)),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "too_many_events",
    );

    let mut big = batch_body(1);
    let pad = 1024 * 1024 + 1 - big.len();
    big.insert_str(big.len() - 1, &" ".repeat(pad));
    assert_eq!(big.len(), 1024 * 1024 + 1);
    let (status, body) = send(
        &h.app,
        post("/source/write_batch", Some(WRITE), big.clone()),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    big.pop();
    big.pop();
    big.push('}');
    let (status, body) = send(&h.app, post("/source/write_batch", Some(WRITE), big)).await;
    assert_eq!(status, StatusCode::OK, "1 MiB exactly is accepted: {body}");
    assert_eq!(h.store.head().await.expect("head"), 1);
}

#[tokio::test]
async fn one_bad_event_refuses_the_batch_and_is_named() {
    let h = harness();
    let mut events: Vec<Value> = (0..1000).map(|i| json!({"data": {"x": i}})).collect();
    events[537] = json!({"data": {"x": 1}, "event_time": "tomorrow"});
    events[900] = json!({"data": 7});
    let body = json!({ "events": events }).to_string();
    let (status, body) = send(&h.app, post("/source/write_batch", Some(WRITE), body)).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    assert_eq!(body["data"]["index"], json!(537), "{body}");
    let description = body["description"].as_str().unwrap_or_default();
    assert!(
        description.contains("events[537]") && description.contains("event_time"),
        "{description}"
    );
    assert_eq!(h.store.head().await.expect("head"), 0, "nothing stored");

    // The first check that fails answers: syntax anywhere before any event.
    let (status, body) = send(
        &h.app,
        post(
            "/source/write_batch",
            Some(WRITE),
            r#"{"events": [{"data": {}}, {"data": {"x": 1e400}}]}"#,
        ),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_json");
    let (status, body) = send(
        &h.app,
        post("/source/write_batch", Some(READ), batch_body(1)),
    )
    .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn a_repeated_batch_key_answers_every_event_as_a_duplicate() {
    let h = harness();
    let call = || {
        with_header(
            post("/source/write_batch", Some(WRITE), batch_body(50)),
            IDEMPOTENCY_KEY_HEADER,
            "backfill-2021-05-01",
        )
    };
    let (_, first) = send(&h.app, call()).await;
    let (status, again) = send(&h.app, call()).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    let first = first["data"]["events"].as_array().expect("events").clone();
    let again = again["data"]["events"].as_array().expect("events").clone();
    assert_eq!(first.len(), 50);
    for (a, b) in first.iter().zip(&again) {
        assert_eq!(a["event_id"], b["event_id"]);
        assert_eq!(a["event_time"], b["event_time"]);
        assert_eq!(
            (a["duplicate"].clone(), b["duplicate"].clone()),
            (json!(false), json!(true))
        );
    }
    assert_eq!(h.store.head().await.expect("head"), 50);

    // The batch key never swallows a single write's key of the same text.
    let single = with_header(
        post("/source/write_raw", Some(WRITE), EVENT),
        IDEMPOTENCY_KEY_HEADER,
        "backfill-2021-05-01",
    );
    let (_, single) = send(&h.app, single).await;
    assert_eq!(single["data"]["duplicate"], json!(false), "{single}");
}

#[tokio::test]
async fn climate_computer_tables_are_valid_batch_items() {
    let h = harness();
    let table = |t: f64, ts: &str| {
        json!({"data": {"name": "_ws_source_meteo",
            "rows": [["Variable", "Value"], ["external_temperature_c", t]], "ts": ts}})
    };
    let body = json!({"events": [table(9.5, "2021-05-01T12:07:50+02:00"), table(10.5, "2021-05-01T12:08:50+02:00")]});
    let (status, body) = send(
        &h.app,
        post("/source/write_batch", Some(WRITE), body.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"]["events"][1]["event_time"],
        json!("2021-05-01T10:08:50.000Z")
    );
    let stored = h.store.read_after(0, 10).await.expect("read");
    assert!(stored.iter().all(|e| e.name == "_ws_source_meteo"));
}

#[tokio::test]
async fn request_ids_are_bounded_and_echoed() {
    let h = harness();
    let id_of = |id: Option<&'static str>| {
        let app = h.app.clone();
        async move {
            let mut request = Request::builder().uri("/health");
            if let Some(id) = id {
                request = request.header("x-request-id", id);
            }
            let response = app
                .oneshot(request.body(Body::empty()).expect("request"))
                .await
                .expect("infallible");
            response.headers()["x-request-id"]
                .to_str()
                .expect("ascii")
                .to_owned()
        }
    };
    assert_eq!(id_of(Some("client-id-42")).await, "client-id-42");
    let long: &'static str = Box::leak("x".repeat(129).into_boxed_str());
    for refused in [long, "has space", "tab\there"] {
        let id = id_of(Some(refused)).await;
        assert_ne!(id, refused);
        assert_eq!(id.len(), 36, "a new UUID replaces {refused:?}: {id}");
    }
    let at_limit: &'static str = Box::leak("y".repeat(128).into_boxed_str());
    assert_eq!(id_of(Some(at_limit)).await, at_limit);
}

#[tokio::test]
async fn series_csv_follows_accept_q_values() {
    let h = harness();
    let body =
        r#"{"interval": "1h", "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}"#;
    let kind = |accept: &'static str| {
        let app = h.app.clone();
        async move {
            let request = Request::builder()
                .method("POST")
                .uri("/source/series")
                .header("x-api-key", READ)
                .header("content-type", "application/json")
                .header("accept", accept)
                .body(Body::from(body))
                .expect("request");
            let response = app.oneshot(request).await.expect("infallible");
            assert_eq!(response.status(), StatusCode::OK, "{accept}");
            response.headers()["content-type"]
                .to_str()
                .expect("ascii")
                .split(';')
                .next()
                .unwrap_or_default()
                .to_owned()
        }
    };
    for (accept, want) in [
        ("text/csv", "text/csv"),
        ("text/csv; charset=utf-8", "text/csv"),
        (
            "text/csv;header=present;q=0.9, application/json;q=0.5",
            "text/csv",
        ),
        ("text/csv;q=0", "application/json"),
        ("text/csv;q=0, */*", "application/json"),
        ("application/json;q=0.5, text/csv", "text/csv"),
        ("text/csv;q=0.4, application/json;q=0.9", "application/json"),
        ("text/*", "text/csv"),
        ("*/*", "application/json"),
        ("not a media type", "application/json"),
    ] {
        assert_eq!(kind(accept).await, want, "Accept: {accept}");
    }
}
