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
use std::sync::Arc;
use sygno_shared::domain::auth::ApiKeys;
use sygno_shared::store::dynamo::DynamoStore;
use tower::util::MapRequest;
use tower::ServiceExt;

/// What a Lambda function could not start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("SYGNO_TABLE is not set: name the DynamoDB table")]
    NoTable,
    #[error("SYGNO_API_KEYS is not set or holds no key")]
    NoKeys,
    #[error(transparent)]
    Keys(#[from] sygno_shared::domain::auth::KeysError),
}

/// A Lambda function's configuration, from its environment.
#[derive(Debug)]
pub struct LambdaConfig {
    pub table: String,
    pub keys: ApiKeys,
}

impl LambdaConfig {
    /// Reads `SYGNO_TABLE` and `SYGNO_API_KEYS` through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let table = var("SYGNO_TABLE")
            .filter(|t| !t.is_empty())
            .ok_or(ConfigError::NoTable)?;
        let keys = ApiKeys::parse(&var("SYGNO_API_KEYS").unwrap_or_default())?;
        if keys.is_empty() {
            return Err(ConfigError::NoKeys);
        }
        Ok(LambdaConfig { table, keys })
    }
}

/// Reads the configuration and builds the store client: once per cold
/// start, never per request. Plaintext keys work but are logged (by key id)
/// as a warning: deployed configuration should hold `sha256:` digests.
pub async fn state_from_env() -> Result<AppState, ConfigError> {
    let config = LambdaConfig::from_vars(|name| std::env::var(name).ok())?;
    for id in config.keys.plaintext_ids() {
        tracing::warn!(
            key_id = id.as_str(),
            "SYGNO_API_KEYS holds a plaintext key; configure sha256:<hex> instead"
        );
    }
    let store = DynamoStore::from_env(&config.table).await;
    Ok(AppState {
        keys: Arc::new(config.keys),
        log: Arc::new(store.clone()),
        views: Arc::new(store),
        rebuild: None,
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
    let state = state_from_env().await?;
    lambda_http::run(service(state)).await
}

#[cfg(test)]
mod tests;
