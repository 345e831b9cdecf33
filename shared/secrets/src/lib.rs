//! Secrets Manager, for the two kinds of secret the platform keeps:
//! - the JWT key set (`key_set`): loaded at cold start, reloaded on a timer, rotated by a
//!   schedule;
//! - each tenant's secret (`tenant`): holds its container's machine token.

pub mod key_set;
pub mod tenant;

pub use key_set::{KeySetSecret, RotationOutcome, RotationPolicy, spawn_reload};
pub use tenant::{EnsuredToken, MachineCredentials, SecretState, TenantSecrets};

use aws_sdk_secretsmanager::error::{DisplayErrorContext, SdkError};

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("Secrets Manager {operation} failed: {message}")]
    Aws { operation: &'static str, message: String },
    #[error("the secret {0} does not exist")]
    Missing(String),
    #[error("the secret {secret} does not hold what it should: {reason}")]
    Malformed { secret: String, reason: String },
    #[error("token: {0}")]
    Token(#[from] dotmac_tokens::TokenError),
}

impl SecretsError {
    fn aws<E: std::error::Error + 'static, R: std::fmt::Debug>(
        operation: &'static str,
        error: SdkError<E, R>,
    ) -> Self {
        SecretsError::Aws { operation, message: DisplayErrorContext(error).to_string() }
    }
}
