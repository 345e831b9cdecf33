use aws_sdk_dynamodb::error::{BuildError, ProvideErrorMetadata, SdkError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the slug {0} is already taken")]
    SlugTaken(String),
    #[error("the item was changed by someone else (expected version {expected})")]
    VersionConflict { expected: u64 },
    #[error("the item already exists")]
    AlreadyExists,
    #[error("stored item could not be read: {0}")]
    Corrupt(String),
    #[error("the pagination cursor is not one this API issued")]
    BadCursor,
    /// A caller-scoped read or write aimed outside the caller's tenant: a bug upstream,
    /// stopped here.
    #[error("the key {key} is outside the caller's reach")]
    OutOfFence { key: String },
    #[error("DynamoDB {operation} failed: {message}")]
    Dynamo { operation: &'static str, message: String },
}

impl StoreError {
    pub(crate) fn dynamo<E, R>(operation: &'static str, error: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let message = match error.as_service_error() {
            Some(service) => format!(
                "{}: {}",
                service.code().unwrap_or("ServiceError"),
                service.message().unwrap_or_default()
            ),
            None => {
                let mut message = error.to_string();
                let mut source = std::error::Error::source(&error);
                while let Some(cause) = source {
                    message.push_str(": ");
                    message.push_str(&cause.to_string());
                    source = cause.source();
                }
                message
            }
        };
        StoreError::Dynamo { operation, message }
    }

    /// A request (or a transaction step) the SDK refused to build: a bug here, reported as
    /// `Corrupt` like every other item this crate cannot make sense of.
    pub(crate) fn request(error: BuildError) -> Self {
        StoreError::Corrupt(error.to_string())
    }
}

/// True when a conditional write was refused because its condition did not hold (as opposed
/// to any other failure), whichever operation it was.
pub(crate) fn condition_failed<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    error.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException")
}

impl From<serde_dynamo::Error> for StoreError {
    fn from(error: serde_dynamo::Error) -> Self {
        StoreError::Corrupt(error.to_string())
    }
}
