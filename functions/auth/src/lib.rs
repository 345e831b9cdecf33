//! The auth function: sign-in, rotating refresh, sign-out (here or everywhere), "who am I",
//! password change and the JWKS.

pub mod account;
pub mod sign_in;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use dotmac_http::error::ErrorEnvelope;
use dotmac_http::{Access, ApiError, ApiRoutes, ErrorCode, Json, Routes, SignedIn, SourceIp, routes};
use dotmac_store::Store;
use dotmac_tokens::{JwkSet, JwtKeys, TokenPair};
use dotmac_users::UserView;
use serde::Deserialize;
use std::sync::Arc;
use time::OffsetDateTime;
use utoipa::ToSchema;

pub use account::AccountError;
pub use sign_in::{SignInError, refresh as refresh_session, sign_in};

impl From<AccountError> for ApiError {
    fn from(error: AccountError) -> Self {
        match error {
            missing @ AccountError::NoUserRecord => ApiError::new(ErrorCode::NotFound, missing.to_string()),
            wrong @ AccountError::WrongCurrentPassword => {
                ApiError::invalid_field("current_password", wrong.to_string())
            }
            AccountError::Policy(invalid) => invalid.into(),
            ended @ AccountError::SessionEnded => ApiError::new(ErrorCode::InvalidToken, ended.to_string()),
            AccountError::Limited(limited) => limited.into(),
            AccountError::Store(error) => error.into(),
            AccountError::Internal(cause) => ApiError::internal(cause),
        }
    }
}

impl From<SignInError> for ApiError {
    fn from(error: SignInError) -> Self {
        match error {
            SignInError::RateLimited { message, retry_after_seconds } => {
                ApiError::rate_limited(message, retry_after_seconds)
            }
            SignInError::InvalidCredentials => {
                ApiError::new(ErrorCode::InvalidCredentials, "the e-mail or password is wrong")
            }
            SignInError::Invalid(invalid) => invalid.into(),
            refused @ SignInError::RefreshRefused(_) => {
                ApiError::new(ErrorCode::InvalidToken, refused.to_string())
            }
            reused @ SignInError::RefreshReused => ApiError::new(ErrorCode::TokenReused, reused.to_string()),
            SignInError::Store(error) => error.into(),
            SignInError::Internal(cause) => ApiError::internal(cause),
        }
    }
}

#[derive(Clone)]
pub struct AuthState {
    pub store: Store,
    pub keys: Arc<JwtKeys>,
}

dotmac_http::bearer_state!(AuthState);

pub fn routes() -> Routes<AuthState> {
    Routes::new()
        .route(Access::Public, routes!(login))
        .route(Access::Public, routes!(refresh))
        .route(Access::SelfService, routes!(logout))
        .route(Access::SelfService, routes!(logout_all))
        .route(Access::SelfService, routes!(me))
        .route(Access::SelfService, routes!(change_password))
        .route(Access::Public, routes!(jwks))
}

pub fn router(state: AuthState) -> ApiRoutes {
    routes().with_state(state)
}

/// The keys our tokens verify against; public, and cacheable for a while.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "auth",
    operation_id = "jwks",
    responses((status = 200, description = "The public keys (RFC 7517, Ed25519)", body = JwkSet))
)]
async fn jwks(State(state): State<AuthState>) -> impl IntoResponse {
    ([(axum::http::header::CACHE_CONTROL, "public, max-age=300")], axum::Json(state.keys.jwks()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    #[schema(schema_with = dotmac_http::schema::email)]
    email: String,
    #[schema(format = Password, min_length = 1, max_length = 256)]
    password: String,
}

/// Sign in: a token pair. A wrong password and an unknown e-mail get the same answer.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "auth",
    operation_id = "login",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = TokenPair),
        (status = 401, description = "`INVALID_CREDENTIALS`", body = ErrorEnvelope),
        (status = 429, description = "`RATE_LIMITED`: too many requests or failed sign-ins", body = ErrorEnvelope),
    )
)]
async fn login(
    State(state): State<AuthState>,
    source: SourceIp,
    Json(request): Json<LoginRequest>,
) -> Result<axum::Json<TokenPair>, ApiError> {
    let now = OffsetDateTime::now_utc();
    let issued = sign_in(&state.store, &state.keys, &source.0, &request.email, request.password, now).await?;
    Ok(axum::Json(issued.pair))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ChangePasswordRequest {
    #[schema(format = Password, min_length = 1, max_length = 256)]
    current_password: String,
    /// 12–128 characters, not the e-mail, not built from breached words, no repeats or runs.
    #[schema(format = Password, min_length = 12, max_length = 128)]
    new_password: String,
}

/// Changes the signed-in user's password after checking the current one; the new one must
/// pass the password policy. Every other session of the user ends at once (their refresh
/// and access tokens are refused); this one carries on.
#[utoipa::path(
    post,
    path = "/v1/auth/password",
    tag = "auth",
    operation_id = "change_password",
    request_body = ChangePasswordRequest,
    responses(
        (status = 204, description = "Changed"),
        (status = 404, description = "`NOT_FOUND`: the signed-in account has no user record", body = ErrorEnvelope),
        (status = 422, description = "`VALIDATION_FAILED` naming `current_password` (wrong) or `new_password` (policy)", body = ErrorEnvelope),
        (status = 429, description = "`RATE_LIMITED`: too many password changes", body = ErrorEnvelope),
    )
)]
async fn change_password(
    State(state): State<AuthState>,
    SignedIn(claims): SignedIn,
    Json(request): Json<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    let now = OffsetDateTime::now_utc();
    account::change_password(&state.store, &claims, request.current_password, request.new_password, now)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    refresh_token: String,
}

/// Trades a refresh token for a new pair. The old refresh token stops working; presenting it
/// again (a replay, or a thief racing the owner) revokes the whole session.
#[utoipa::path(
    post,
    path = "/v1/auth/refresh",
    tag = "auth",
    operation_id = "refresh",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new pair", body = TokenPair),
        (status = 401, description = "`INVALID_TOKEN`, or `TOKEN_REUSED` (the session is now revoked)", body = ErrorEnvelope),
        (status = 429, description = "`RATE_LIMITED`", body = ErrorEnvelope),
    )
)]
async fn refresh(
    State(state): State<AuthState>,
    source: SourceIp,
    Json(request): Json<RefreshRequest>,
) -> Result<axum::Json<TokenPair>, ApiError> {
    let now = OffsetDateTime::now_utc();
    sign_in::within_rate(&state.store, &source.0, now.unix_timestamp()).await?;
    let issued = refresh_session(&state.store, &state.keys, &request.refresh_token, now).await?;
    Ok(axum::Json(issued.pair))
}

/// Signs out: the session ends at once, on every instance — every access token issued in it
/// (earlier refreshes' too) and its refresh token. A machine token is signed out alone.
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    tag = "auth",
    operation_id = "logout",
    responses((status = 204, description = "Signed out"))
)]
async fn logout(State(state): State<AuthState>, SignedIn(claims): SignedIn) -> Result<StatusCode, ApiError> {
    account::sign_out(&state.store, &claims).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Signs out everywhere: every session of the signed-in user ends at once, this one too.
#[utoipa::path(
    post,
    path = "/v1/auth/logout-all",
    tag = "auth",
    operation_id = "logout_all",
    responses(
        (status = 204, description = "Every session ended"),
        (status = 404, description = "`NOT_FOUND`: the signed-in account has no user record (a machine token)", body = ErrorEnvelope),
    )
)]
async fn logout_all(
    State(state): State<AuthState>,
    SignedIn(claims): SignedIn,
) -> Result<StatusCode, ApiError> {
    account::sign_out_everywhere(&state.store, &claims, OffsetDateTime::now_utc()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user, as stored (never the password hash).
#[utoipa::path(
    get,
    path = "/v1/auth/me",
    tag = "auth",
    operation_id = "me",
    responses(
        (status = 200, description = "The signed-in user", body = UserView),
        (status = 404, description = "`NOT_FOUND`: the signed-in account has no user record", body = ErrorEnvelope),
    )
)]
async fn me(
    State(state): State<AuthState>,
    SignedIn(claims): SignedIn,
) -> Result<axum::Json<UserView>, ApiError> {
    let user = account::me(&state.store, &claims).await?;
    Ok(axum::Json(UserView::of(&user)))
}
