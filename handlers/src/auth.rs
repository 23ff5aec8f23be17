//! The `x-api-key` check: 401 for a missing or unknown key, 403 for a known
//! key without the route's role. Runs before the body is read.

use crate::error::ApiError;
use axum::http::HeaderMap;
use sygno_shared::domain::auth::{ApiKeys, KeyId, Role};

pub const API_KEY_HEADER: &str = "x-api-key";

/// The caller's key id, if its key is known and has `role`.
pub fn authorize(keys: &ApiKeys, headers: &HeaderMap, role: Role) -> Result<KeyId, ApiError> {
    let presented = headers
        .get(API_KEY_HEADER)
        .ok_or_else(|| ApiError::unauthorized("missing x-api-key header"))?;
    let (id, roles) = keys
        .authenticate(presented.as_bytes())
        .ok_or_else(|| ApiError::unauthorized("unknown API key"))?;
    if !roles.has(role) {
        return Err(ApiError::forbidden(format!(
            "this API key lacks the `{}` role",
            role.as_str()
        )));
    }
    Ok(id)
}
