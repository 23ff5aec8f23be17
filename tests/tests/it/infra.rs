//! `infra/template.yaml`: what a linter cannot see. cfn-lint and
//! `sam validate --lint` check the template's syntax and types
//! (`scripts/check-infra`); these tests check its intent: least privilege
//! per function, the stream mapping's failure handling, no secrets, every
//! route of the contract, and artifacts the workspace builds.
//!
//! The YAML is read with CloudFormation's short tags dropped (`!Ref X`
//! reads as `X`, `!GetAtt T.Arn` as `T.Arn`), which is all these checks need.

use std::collections::BTreeSet;
use std::path::PathBuf;
use yaml_rust2::{Yaml, YamlLoader};

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn template_text() -> String {
    std::fs::read_to_string(repo_file("infra/template.yaml")).expect("infra/template.yaml")
}

fn template() -> Yaml {
    YamlLoader::load_from_str(&template_text())
        .expect("the template is YAML")
        .into_iter()
        .next()
        .expect("one document")
}

fn resources(t: &Yaml) -> Vec<(String, Yaml)> {
    t["Resources"]
        .as_hash()
        .expect("Resources")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), v.clone()))
        .collect()
}

fn strings(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::String(s) => vec![s.clone()],
        Yaml::Array(a) => a.iter().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

/// Every policy statement of a function: (actions, resource, leading keys).
fn statements(function: &Yaml) -> Vec<(Vec<String>, String, Vec<String>)> {
    let policies = function["Properties"]["Policies"]
        .as_vec()
        .expect("Policies");
    let mut out = Vec::new();
    for policy in policies {
        for statement in policy["Statement"].as_vec().expect("inline statements") {
            assert_eq!(statement["Effect"].as_str(), Some("Allow"));
            let condition = &statement["Condition"];
            let leading = ["ForAllValues:StringLike", "ForAllValues:StringEquals"]
                .iter()
                .flat_map(|op| strings(&condition[*op]["dynamodb:LeadingKeys"]))
                .collect();
            out.push((
                strings(&statement["Action"]),
                statement["Resource"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                leading,
            ));
        }
    }
    out
}

fn function<'a>(all: &'a [(String, Yaml)], name: &str) -> &'a Yaml {
    &all.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .1
}

#[test]
fn each_function_may_do_only_its_job() {
    let t = template();
    let all = resources(&t);
    // The write function: event items (partition keys log#NN), the
    // sources' items (partition src), and reading rows (old sources).
    for (actions, resource, leading) in statements(function(&all, "WriteFunction")) {
        for action in &actions {
            match action.as_str() {
                "dynamodb:PutItem" => {
                    assert!(
                        leading == ["log#*"] || leading == ["src"],
                        "{action} beyond event and source items: {leading:?}"
                    );
                }
                "dynamodb:GetItem" => {
                    assert!(
                        leading == ["log#*"] || leading == ["src"] || leading == ["rows"],
                        "{action} beyond event, source and rows items: {leading:?}"
                    );
                }
                "dynamodb:UpdateItem" => {
                    assert_eq!(leading, ["src"], "{action} beyond the sources' count");
                }
                "dynamodb:DescribeTable" => assert_eq!(resource, "Table.Arn"),
                "ssm:GetParameter" => assert!(resource.contains("${ApiKeysParameterName}")),
                other => panic!("the write function may not {other}"),
            }
        }
    }
    // The read function: the rows partition, and for series the state
    // item and the summaries, read only.
    for (actions, resource, leading) in statements(function(&all, "ReadFunction")) {
        for action in &actions {
            match action.as_str() {
                "dynamodb:BatchGetItem" => {
                    assert_eq!(leading, ["rows"], "{action} beyond the rows")
                }
                "dynamodb:GetItem" | "dynamodb:Query" => assert!(
                    leading == ["rows"] || leading == ["agg", "m#*", "h#*"],
                    "{action} beyond the rows and the summaries: {leading:?}"
                ),
                "dynamodb:DescribeTable" => assert_eq!(resource, "Table.Arn"),
                "ssm:GetParameter" => assert!(resource.contains("${ApiKeysParameterName}")),
                other => panic!("the read function may not {other}"),
            }
        }
    }
    // The aggregator: its own items, the stream, the failure queue; never
    // an event item.
    for (actions, resource, leading) in statements(function(&all, "AggregatorFunction")) {
        for action in &actions {
            match action.as_str() {
                "dynamodb:GetItem"
                | "dynamodb:BatchGetItem"
                | "dynamodb:Query"
                | "dynamodb:PutItem"
                | "dynamodb:ConditionCheckItem" => {
                    // Exactly the partitions the aggregator writes.
                    assert_eq!(
                        leading,
                        sygno_shared::store::dynamo::state::AGGREGATOR_KEY_PATTERNS,
                        "{action}"
                    );
                    assert!(
                        leading.iter().all(|k| !k.starts_with("log")),
                        "{action} on event items: {leading:?}"
                    );
                }
                "dynamodb:DescribeStream" | "dynamodb:GetRecords" | "dynamodb:GetShardIterator" => {
                    assert_eq!(resource, "Table.StreamArn")
                }
                "dynamodb:ListStreams" => assert!(resource.contains("/stream/")),
                "sqs:SendMessage" => assert_eq!(resource, "StreamFailures.Arn"),
                other => panic!("the aggregator may not {other}"),
            }
        }
    }
    // Nowhere a wildcard action, a Scan, or a managed policy.
    let text = template_text();
    assert!(!text.contains("dynamodb:Scan"));
    for (name, resource) in &all {
        if resource["Type"].as_str() == Some("AWS::Serverless::Function") {
            for (actions, _, _) in statements(resource) {
                assert!(
                    actions.iter().all(|a| !a.contains('*')),
                    "{name}: {actions:?}"
                );
            }
            for policy in resource["Properties"]["Policies"]
                .as_vec()
                .into_iter()
                .flatten()
            {
                assert!(policy.as_hash().is_some(), "{name}: only inline statements");
            }
        }
    }
}

#[test]
fn the_stream_mapping_reports_partial_failures_and_keeps_what_fails() {
    let t = template();
    let all = resources(&t);
    let events = &function(&all, "AggregatorFunction")["Properties"]["Events"];
    let stream = &events["Stream"]["Properties"];
    assert_eq!(events["Stream"]["Type"].as_str(), Some("DynamoDB"));
    assert_eq!(
        strings(&stream["FunctionResponseTypes"]),
        ["ReportBatchItemFailures"]
    );
    assert_eq!(stream["BisectBatchOnFunctionError"].as_bool(), Some(true));
    assert_eq!(
        stream["DestinationConfig"]["OnFailure"]["Type"].as_str(),
        Some("SQS")
    );
    assert_eq!(
        stream["DestinationConfig"]["OnFailure"]["Destination"].as_str(),
        Some("StreamFailures.Arn")
    );
    // Retries and record age are bounded parameters.
    for (field, parameter) in [
        ("MaximumRetryAttempts", "StreamMaximumRetryAttempts"),
        ("MaximumRecordAgeInSeconds", "StreamMaximumRecordAgeSeconds"),
        ("BatchSize", "StreamBatchSize"),
        ("ParallelizationFactor", "StreamParallelizationFactor"),
        (
            "MaximumBatchingWindowInSeconds",
            "StreamBatchingWindowSeconds",
        ),
    ] {
        assert_eq!(stream[field].as_str(), Some(parameter));
        let p = &t["Parameters"][parameter];
        assert!(p["MaxValue"].as_i64().is_some(), "{parameter} is unbounded");
    }
    assert!(t["Parameters"]["StreamMaximumRetryAttempts"]["MaxValue"].as_i64() < Some(10_001));
    assert_eq!(
        t["Parameters"]["StreamParallelizationFactor"]["MaxValue"].as_i64(),
        Some(10),
        "Lambda's limit"
    );
    // One retention for every function (the aggregator's TTLs, the read
    // function's refusals), at least the 8 days the windows need.
    let vars = &t["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(
        vars["SYGNO_MINUTE_RETENTION_DAYS"].as_str(),
        Some("MinuteRetentionDays")
    );
    assert_eq!(
        vars["SYGNO_HOUR_RETENTION_DAYS"].as_str(),
        Some("HourRetentionDays")
    );
    assert_eq!(
        t["Parameters"]["MinuteRetentionDays"]["MinValue"].as_i64(),
        Some(8)
    );
    assert_eq!(
        t["Parameters"]["MinuteRetentionDays"]["Default"].as_i64(),
        Some(35)
    );
    // Only event items invoke it, and a schedule rolls the windows.
    let filter = stream["FilterCriteria"]["Filters"][0]["Pattern"]
        .as_str()
        .expect("a filter");
    let filter: serde_json::Value = serde_json::from_str(filter).expect("JSON pattern");
    assert_eq!(filter["dynamodb"]["NewImage"]["kind"]["S"][0], "event");
    assert_eq!(events["Roll"]["Type"].as_str(), Some("Schedule"));
    assert_eq!(
        events["Roll"]["Properties"]["Schedule"].as_str(),
        Some("rate(1 minute)")
    );
}

#[test]
fn the_table_matches_what_sygno_table_create_makes() {
    let t = template();
    let all = resources(&t);
    let table = &function(&all, "Table")["Properties"];
    assert_eq!(table["BillingMode"].as_str(), Some("PAY_PER_REQUEST"));
    assert_eq!(
        table["StreamSpecification"]["StreamViewType"].as_str(),
        Some("NEW_IMAGE")
    );
    assert_eq!(
        table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(),
        Some(true)
    );
    assert_eq!(
        table["TimeToLiveSpecification"]["AttributeName"].as_str(),
        Some("expires_at")
    );
    let keys: Vec<(String, String)> = table["KeySchema"]
        .as_vec()
        .expect("keys")
        .iter()
        .map(|k| {
            (
                k["AttributeName"].as_str().unwrap_or_default().to_owned(),
                k["KeyType"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("pk".to_owned(), "HASH".to_owned()),
            ("sk".to_owned(), "RANGE".to_owned())
        ]
    );
    assert_eq!(
        strings(&table["DeletionProtectionEnabled"])[0],
        "IsProduction"
    );
}

#[test]
fn no_secret_is_in_the_template() {
    let text = template_text();
    assert!(!text.contains("SYGNO_API_KEYS:"), "keys in the environment");
    let digest = text.match_indices("sha256:").any(|(at, m)| {
        text[at + m.len()..]
            .chars()
            .take(16)
            .all(|c| c.is_ascii_hexdigit())
    });
    assert!(!digest, "a key digest in the template");
    assert!(!text.contains("AKIA") && !text.contains("aws_secret_access_key"));
    let t = template();
    let all = resources(&t);
    for name in ["WriteFunction", "ReadFunction"] {
        let vars = &function(&all, name)["Properties"]["Environment"]["Variables"];
        assert_eq!(
            vars["SYGNO_API_KEYS_PARAMETER"].as_str(),
            Some("ApiKeysParameterName"),
            "{name} reads its keys from Parameter Store"
        );
    }
}

#[test]
fn every_route_of_the_contract_reaches_its_function() {
    let t = template();
    let all = resources(&t);
    let mut routes = BTreeSet::new();
    for (name, resource) in &all {
        for (_, event) in resource["Properties"]["Events"]
            .as_hash()
            .into_iter()
            .flatten()
        {
            if event["Type"].as_str() == Some("HttpApi") {
                let p = &event["Properties"];
                assert_eq!(p["ApiId"].as_str(), Some("Api"));
                routes.insert((
                    p["Method"].as_str().unwrap_or_default().to_owned(),
                    p["Path"].as_str().unwrap_or_default().to_owned(),
                    name.clone(),
                ));
            }
        }
    }
    for prefix in ["/source", "/sygno"] {
        assert!(routes.contains(&(
            "POST".into(),
            format!("{prefix}/write_raw"),
            "WriteFunction".into()
        )));
        assert!(routes.contains(&(
            "POST".into(),
            format!("{prefix}/expose"),
            "ReadFunction".into()
        )));
        assert!(routes.contains(&(
            "GET".into(),
            format!("{prefix}/sources"),
            "ReadFunction".into()
        )));
        assert!(routes.contains(&(
            "POST".into(),
            format!("{prefix}/write_batch"),
            "WriteFunction".into()
        )));
        assert!(routes.contains(&(
            "POST".into(),
            format!("{prefix}/series"),
            "ReadFunction".into()
        )));
    }
    assert!(routes.contains(&("GET".into(), "/grafana".into(), "ReadFunction".into())));
    assert!(routes.contains(&(
        "POST".into(),
        "/grafana/{proxy+}".into(),
        "ReadFunction".into()
    )));
    for path in ["/health", "/docs", "/openapi.json"] {
        assert!(
            routes.contains(&("GET".into(), path.into(), "ReadFunction".into())),
            "{path}: {routes:?}"
        );
    }
    let api = &function(&all, "Api")["Properties"];
    assert!(api["DefaultRouteSettings"]["ThrottlingRateLimit"]
        .as_str()
        .is_some());
    assert!(api["DefaultRouteSettings"]["ThrottlingBurstLimit"]
        .as_str()
        .is_some());
    assert_eq!(
        api["AccessLogSettings"]["DestinationArn"].as_str(),
        Some("AccessLogs.Arn")
    );
}

#[test]
fn functions_run_the_workspace_lambda_binaries() {
    let t = template();
    let all = resources(&t);
    let manifests = ["handlers/Cargo.toml", "aggregator/Cargo.toml"]
        .map(|p| std::fs::read_to_string(repo_file(p)).expect("manifest"))
        .join("\n");
    for (name, bin) in [
        ("WriteFunction", "sygno-write"),
        ("ReadFunction", "sygno-read"),
        ("AggregatorFunction", "sygno-aggregator"),
    ] {
        let properties = &function(&all, name)["Properties"];
        assert_eq!(
            properties["CodeUri"].as_str(),
            Some(format!("../target/lambda/{bin}/").as_str()),
            "{name} runs cargo lambda's output"
        );
        assert!(
            manifests.contains(&format!("name = \"{bin}\"")),
            "no binary {bin}"
        );
    }
    assert_eq!(
        t["Globals"]["Function"]["Runtime"].as_str(),
        Some("provided.al2023")
    );
    assert_eq!(
        t["Globals"]["Function"]["Handler"].as_str(),
        Some("bootstrap")
    );
}

#[test]
fn alarms_watch_lag_failures_throttles_and_5xx() {
    let t = template();
    let all = resources(&t);
    let watched: BTreeSet<(String, String)> = all
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::CloudWatch::Alarm"))
        .map(|(_, r)| {
            let p = &r["Properties"];
            assert!(
                !strings(&p["AlarmActions"]).is_empty(),
                "an alarm nobody hears"
            );
            (
                p["MetricName"].as_str().unwrap_or_default().to_owned(),
                p["Dimensions"][0]["Value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    let expected = [
        ("IteratorAge", "AggregatorFunction"),
        (
            "ApproximateNumberOfMessagesVisible",
            "StreamFailures.QueueName",
        ),
        ("5xx", "Api"),
    ]
    .into_iter()
    .chain(
        ["WriteFunction", "ReadFunction", "AggregatorFunction"]
            .into_iter()
            .flat_map(|f| [("Errors", f), ("Throttles", f)]),
    );
    for (metric, dimension) in expected {
        assert!(
            watched.contains(&(metric.to_owned(), dimension.to_owned())),
            "no alarm on {metric} of {dimension}"
        );
    }
    for output in ["ApiUrl", "TableName", "StreamArn", "StreamFailuresQueueUrl"] {
        assert!(!t["Outputs"][output].is_badvalue(), "no output {output}");
    }
}
