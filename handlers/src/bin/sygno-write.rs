//! The write Lambda function: the API router behind API Gateway, on the
//! DynamoDB store. Configured by SYGNO_TABLE and SYGNO_API_KEYS (use
//! `sha256:` entries) and the standard AWS environment.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    sygno_handlers::lambda::run().await
}
