//! The write Lambda function: the API router behind API Gateway, on the
//! DynamoDB store. Configured by SYGNO_TABLE, the API keys from the SSM
//! SecureString named by SYGNO_API_KEYS_PARAMETER (or, locally, the entries
//! in SYGNO_API_KEYS; use `sha256:` entries) and the standard AWS environment.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    sygno_handlers::lambda::run().await
}
