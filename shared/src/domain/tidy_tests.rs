//! Invariants of the code base, checked as tests.

use std::path::Path;

/// The domain does no I/O: it names no runtime, web or cloud crate.
#[test]
fn domain_is_pure() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domain");
    let mut stack = vec![dir];
    let mut checked = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name == "tidy_tests.rs" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("utf-8");
            for banned in [
                "aws_",
                "axum",
                "lambda_",
                "tokio",
                "Utc::now",
                "SystemTime",
                "rusqlite",
                "std::fs",
                "rand::",
            ] {
                assert!(
                    !text.contains(banned),
                    "{} mentions {banned}",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} files checked");
}
