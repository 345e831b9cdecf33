use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

/// Declares the error codes once: the enum, its list, each code's status and its name (which
/// is also what serde writes, so the document's enum and the answers agree).
macro_rules! error_codes {
    ($($code:ident = $name:literal => $status:ident,)*) => {
        /// Every error code the API answers with; the status goes with the code.
        // The names come from `rename_all` (a rename per variant would not reach utoipa
        // through the macro); a test holds them equal to the names listed here.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum ErrorCode {
            $($code,)*
        }

        impl ErrorCode {
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$code,)*];

            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$code => StatusCode::$status,)*
                }
            }

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$code => $name,)*
                }
            }
        }
    };
}

error_codes! {
    ValidationFailed = "VALIDATION_FAILED" => UNPROCESSABLE_ENTITY,
    MalformedRequest = "MALFORMED_REQUEST" => BAD_REQUEST,
    WebhookSignatureInvalid = "WEBHOOK_SIGNATURE_INVALID" => BAD_REQUEST,
    UnsupportedMediaType = "UNSUPPORTED_MEDIA_TYPE" => UNSUPPORTED_MEDIA_TYPE,
    PayloadTooLarge = "PAYLOAD_TOO_LARGE" => PAYLOAD_TOO_LARGE,
    Unauthenticated = "UNAUTHENTICATED" => UNAUTHORIZED,
    InvalidCredentials = "INVALID_CREDENTIALS" => UNAUTHORIZED,
    InvalidToken = "INVALID_TOKEN" => UNAUTHORIZED,
    TokenReused = "TOKEN_REUSED" => UNAUTHORIZED,
    Forbidden = "FORBIDDEN" => FORBIDDEN,
    NotFound = "NOT_FOUND" => NOT_FOUND,
    TenantNotFound = "TENANT_NOT_FOUND" => NOT_FOUND,
    InvitationNotFound = "INVITATION_NOT_FOUND" => NOT_FOUND,
    BackupNotFound = "BACKUP_NOT_FOUND" => NOT_FOUND,
    PlanNotFound = "PLAN_NOT_FOUND" => NOT_FOUND,
    BundleNotFound = "BUNDLE_NOT_FOUND" => NOT_FOUND,
    SubscriptionNotFound = "SUBSCRIPTION_NOT_FOUND" => NOT_FOUND,
    InvoiceNotFound = "INVOICE_NOT_FOUND" => NOT_FOUND,
    BillingRunNotFound = "BILLING_RUN_NOT_FOUND" => NOT_FOUND,
    RolloutNotFound = "ROLLOUT_NOT_FOUND" => NOT_FOUND,
    PartnerNotFound = "PARTNER_NOT_FOUND" => NOT_FOUND,
    InvitationExpired = "INVITATION_EXPIRED" => GONE,
    MethodNotAllowed = "METHOD_NOT_ALLOWED" => METHOD_NOT_ALLOWED,
    SlugTaken = "SLUG_TAKEN" => CONFLICT,
    AlreadyExists = "ALREADY_EXISTS" => CONFLICT,
    ReportConflict = "REPORT_CONFLICT" => CONFLICT,
    BackupNotCompleted = "BACKUP_NOT_COMPLETED" => CONFLICT,
    TenantNotActive = "TENANT_NOT_ACTIVE" => CONFLICT,
    VersionConflict = "VERSION_CONFLICT" => CONFLICT,
    TenantStateConflict = "TENANT_STATE_CONFLICT" => CONFLICT,
    RolloutStateConflict = "ROLLOUT_STATE_CONFLICT" => CONFLICT,
    RequestInProgress = "REQUEST_IN_PROGRESS" => CONFLICT,
    InvoiceNotPaid = "INVOICE_NOT_PAID" => CONFLICT,
    RefundExceedsPaid = "REFUND_EXCEEDS_PAID" => CONFLICT,
    RefundRefused = "REFUND_REFUSED" => CONFLICT,
    IdempotencyKeyReused = "IDEMPOTENCY_KEY_REUSED" => UNPROCESSABLE_ENTITY,
    RateLimited = "RATE_LIMITED" => TOO_MANY_REQUESTS,
    DependencyUnavailable = "DEPENDENCY_UNAVAILABLE" => SERVICE_UNAVAILABLE,
    Internal = "INTERNAL" => INTERNAL_SERVER_ERROR,
}

/// The body of every error answer, as the OpenAPI document describes it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// For people; may change between releases. Programs read `code`.
    pub message: String,
    /// What the code needs to be acted on: `field` and `reason` for a 422, `retry_after_seconds`
    /// for a 429, `failing` for a 503 from `/ready`, ...
    #[schema(value_type = Object)]
    pub details: Value,
}

/// An error answer: `{"error":{"code","message","details"}}`. Internal causes are logged,
/// never sent.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Value,
    /// Seconds before a retry can succeed: sent as `Retry-After` (and in `details`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: json!({}), retry_after: None }
    }

    /// A 429 saying when to come back.
    pub fn rate_limited(message: impl Into<String>, retry_after_seconds: i64) -> Self {
        let seconds = u64::try_from(retry_after_seconds).unwrap_or(0).max(1);
        let mut error = Self::new(ErrorCode::RateLimited, message)
            .with_details(json!({ "retry_after_seconds": seconds }));
        error.retry_after = Some(seconds);
        error
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// A 422 that names the offending field.
    pub fn invalid_field(field: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self::new(ErrorCode::ValidationFailed, format!("{field}: {reason}"))
            .with_details(json!({ "field": field, "reason": reason }))
    }

    /// A 500 whose cause goes to the log only.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "something went wrong on our side; it has been logged")
    }

    pub fn unavailable(dependency: &str, cause: impl std::fmt::Display) -> Self {
        tracing::error!(dependency, error = %cause, "dependency unavailable");
        Self::new(ErrorCode::DependencyUnavailable, format!("{dependency} is unavailable"))
            .with_details(json!({ "dependency": dependency }))
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    pub fn body(&self) -> Value {
        json!({ "error": { "code": self.code, "message": self.message, "details": self.details } })
    }
}

impl From<dotmac_domain::InvalidValue> for ApiError {
    fn from(invalid: dotmac_domain::InvalidValue) -> Self {
        ApiError::invalid_field(invalid.field, invalid.reason)
    }
}

impl From<dotmac_domain::Denied> for ApiError {
    fn from(denied: dotmac_domain::Denied) -> Self {
        ApiError::new(ErrorCode::Forbidden, "you are not allowed to do this")
            .with_details(json!({ "resource": denied.resource, "action": denied.action }))
    }
}

impl From<dotmac_store::StoreError> for ApiError {
    fn from(error: dotmac_store::StoreError) -> Self {
        use dotmac_store::StoreError::*;
        match error {
            SlugTaken(slug) => {
                ApiError::new(ErrorCode::SlugTaken, format!("the slug {slug} is already taken"))
                    .with_details(json!({ "field": "slug", "slug": slug }))
            }
            BadCursor => ApiError::invalid_field("cursor", "is not a cursor this API issued"),
            AlreadyExists => ApiError::new(ErrorCode::AlreadyExists, "it already exists"),
            // Logged where it was stopped; the caller learns no more than a policy refusal.
            OutOfFence { .. } => ApiError::new(ErrorCode::Forbidden, "not allowed"),
            Dynamo { .. } => ApiError::unavailable("dynamodb", error),
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, axum::Json(self.body())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_shape() {
        let body = ApiError::invalid_field("slug", "is reserved").body();
        assert_eq!(body["error"]["code"], "VALIDATION_FAILED");
        assert_eq!(body["error"]["details"]["field"], "slug");
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("slug")));
    }

    #[test]
    fn every_code_serialises_as_its_name() {
        for &code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).ok(), Some(Value::String(code.as_str().to_owned())));
        }
    }

    #[test]
    fn a_rate_limit_carries_its_retry_after_in_the_header_and_the_details() {
        let response = ApiError::rate_limited("slow down", 42).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("42"));
        let zero = ApiError::rate_limited("slow down", 0);
        assert_eq!((zero.retry_after, zero.details["retry_after_seconds"].as_u64()), (Some(1), Some(1)));
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let body = ApiError::internal("password=hunter2 leaked").body();
        assert!(!body.to_string().contains("hunter2"));
    }
}
