//! The router behind API Gateway: the write and read Lambda functions serve
//! [`crate::app`] through `lambda_http`, which accepts REST (v1) and HTTP
//! API (v2) payloads alike.
//!
//! A named stage appears in the path API Gateway forwards
//! (`/prod/source/expose`); [`strip_stage`] removes it before routing, from
//! the stage the request context names, so the same routes serve every
//! stage and `$default`.

use crate::routes::{app, AppState};
use axum::http::{Request, Uri};
use axum::Router;
use lambda_http::request::RequestContext;
use sygno_shared::domain::auth::ApiKeys;
use sygno_shared::domain::series::Retention;
use sygno_shared::store::dynamo::DynamoStore;
use tower::util::MapRequest;
use tower::ServiceExt;

/// What a Lambda function could not start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("SYGNO_TABLE is not set: name the DynamoDB table")]
    NoTable,
    #[error("neither SYGNO_API_KEYS_PARAMETER nor SYGNO_API_KEYS is set, or they hold no key")]
    NoKeys,
    #[error("set SYGNO_API_KEYS_PARAMETER or SYGNO_API_KEYS, not both")]
    BothKeySources,
    #[error("reading the API keys from SSM parameter {name} failed")]
    Parameter {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Keys(#[from] sygno_shared::domain::auth::KeysError),
    #[error("{0}")]
    Retention(String),
    #[error("{0}")]
    Limit(String),
}

/// Where the API keys come from.
#[derive(Debug)]
pub enum KeySource {
    /// `SYGNO_API_KEYS`: the entries themselves (local runs, tests).
    Inline(ApiKeys),
    /// `SYGNO_API_KEYS_PARAMETER`: the name of an SSM Parameter Store
    /// SecureString holding the entries, read at cold start (deployments:
    /// no key, not even a digest, in the template or the environment).
    Parameter(String),
}

/// A Lambda function's configuration, from its environment.
#[derive(Debug)]
pub struct LambdaConfig {
    pub table: String,
    pub keys: KeySource,
    /// `SYGNO_MINUTE_RETENTION_DAYS` / `SYGNO_HOUR_RETENTION_DAYS`, as the
    /// aggregator function keeps summaries (series finer are refused).
    pub retention: Retention,
    /// `SYGNO_MAX_SOURCES` (the write function's bound on sources).
    pub max_sources: usize,
}

impl LambdaConfig {
    /// Reads `SYGNO_TABLE` and one of `SYGNO_API_KEYS_PARAMETER` and
    /// `SYGNO_API_KEYS` through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let table = var("SYGNO_TABLE")
            .filter(|t| !t.is_empty())
            .ok_or(ConfigError::NoTable)?;
        let parameter = var("SYGNO_API_KEYS_PARAMETER").filter(|p| !p.is_empty());
        let inline = var("SYGNO_API_KEYS");
        let keys = match (parameter, inline) {
            (Some(_), Some(_)) => return Err(ConfigError::BothKeySources),
            (Some(name), None) => KeySource::Parameter(name),
            (None, inline) => {
                KeySource::Inline(non_empty(ApiKeys::parse(&inline.unwrap_or_default())?)?)
            }
        };
        let retention = Retention::from_vars(&var).map_err(ConfigError::Retention)?;
        let max_sources =
            sygno_shared::domain::limit::parse_max_sources(var("SYGNO_MAX_SOURCES").as_deref())
                .map_err(ConfigError::Limit)?;
        Ok(LambdaConfig {
            table,
            keys,
            retention,
            max_sources,
        })
    }
}

fn non_empty(keys: ApiKeys) -> Result<ApiKeys, ConfigError> {
    if keys.is_empty() {
        return Err(ConfigError::NoKeys);
    }
    Ok(keys)
}

/// Reads the API keys from the SSM parameter `name` (a SecureString,
/// decrypted). Errors name the parameter, never its value.
pub async fn keys_from_parameter(
    ssm: &aws_sdk_ssm::Client,
    name: &str,
) -> Result<ApiKeys, ConfigError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| ConfigError::Parameter {
        name: name.to_owned(),
        source,
    };
    let got = ssm
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| failed(Box::new(e)))?;
    let value = got
        .parameter()
        .and_then(|p| p.value())
        .ok_or_else(|| failed("the parameter has no value".into()))?;
    non_empty(ApiKeys::parse(value)?)
}

/// Reads the configuration, the API keys and builds the store client: once
/// per cold start, never per request. Plaintext keys work but are logged
/// (by key id) as a warning: deployed configuration should hold `sha256:`
/// digests.
pub async fn state_from_env() -> Result<AppState, ConfigError> {
    let config = LambdaConfig::from_vars(|name| std::env::var(name).ok())?;
    let sdk = sygno_shared::store::dynamo::sdk_config().await;
    let keys = match config.keys {
        KeySource::Inline(keys) => keys,
        KeySource::Parameter(name) => {
            keys_from_parameter(&aws_sdk_ssm::Client::new(&sdk), &name).await?
        }
    };
    for id in keys.plaintext_ids() {
        tracing::warn!(
            key_id = id.as_str(),
            "the API keys hold a plaintext key; configure sha256:<hex> instead"
        );
    }
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), &config.table)
        .with_max_sources(config.max_sources);
    Ok(AppState {
        retention: config.retention,
        ..AppState::on_store(keys, store, None)
    })
}

/// The router as a Lambda HTTP service.
pub type LambdaService = MapRequest<Router, fn(lambda_http::Request) -> lambda_http::Request>;

/// The router with the stage prefix stripped before routing.
pub fn service(state: AppState) -> LambdaService {
    app(state).map_request(strip_stage as fn(lambda_http::Request) -> lambda_http::Request)
}

/// Removes `/{stage}` from the front of the path when the API Gateway
/// request context names a stage other than `$default`.
pub fn strip_stage<B>(mut request: Request<B>) -> Request<B> {
    let stage = match request.extensions().get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV1(context)) => context.stage.clone(),
        Some(RequestContext::ApiGatewayV2(context)) => context.stage.clone(),
        _ => None,
    };
    let Some(stage) = stage.filter(|s| !s.is_empty() && s != "$default") else {
        return request;
    };
    let prefix = format!("/{stage}");
    let path = request.uri().path();
    let rest = match path.strip_prefix(&prefix) {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => return request,
    };
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_owned(),
    };
    let mut parts = request.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// Runs a Lambda function serving the API. Both HTTP functions (write and
/// read) run this; IAM decides what each may touch.
pub async fn run() -> Result<(), lambda_http::Error> {
    sygno_shared::telemetry::init(true);
    sygno_shared::telemetry::install_cloudwatch();
    let state = state_from_env().await?;
    // Each invocation's metrics, as one embedded metric format line.
    let service = service(state).map_future(|answer| async move {
        let answer = answer.await;
        sygno_shared::telemetry::flush_cloudwatch();
        answer
    });
    lambda_http::run(service).await
}

#[cfg(test)]
mod tests;
