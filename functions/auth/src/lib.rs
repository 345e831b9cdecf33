//! The auth function: sign-in, rotating refresh, sign-out, "who am I", the JWKS, and
//! password hashing.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use dotmac_domain::Email;
use dotmac_http::{Access, ApiError, ApiRoutes, ErrorCode, Json, Routes, SignedIn, SourceIp};
use dotmac_store::{Rotation, Store, UserHome, UserRecord};
use dotmac_tokens::{JwtKeys, TokenKind, hash_password, verify_password};
use serde::Deserialize;
use std::sync::Arc;
use time::OffsetDateTime;

#[derive(Clone)]
pub struct AuthState {
    pub store: Store,
    pub keys: Arc<JwtKeys>,
}

dotmac_http::bearer_state!(AuthState);

pub fn router(state: AuthState) -> ApiRoutes {
    Routes::new()
        .route(Method::POST, "/v1/auth/login", Access::Public, login)
        .route(Method::POST, "/v1/auth/refresh", Access::Public, refresh)
        .route(Method::POST, "/v1/auth/logout", Access::SelfService, logout)
        .route(Method::GET, "/v1/auth/me", Access::SelfService, me)
        .route(Method::POST, "/v1/auth/password", Access::SelfService, change_password)
        .route(Method::GET, "/.well-known/jwks.json", Access::Public, jwks)
        .with_state(state)
}

/// The keys our tokens verify against; public, and cacheable for a while.
async fn jwks(State(state): State<AuthState>) -> impl IntoResponse {
    ([(axum::http::header::CACHE_CONTROL, "public, max-age=300")], axum::Json(state.keys.jwks()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    email: String,
    password: String,
}

fn invalid_credentials() -> ApiError {
    ApiError::new(ErrorCode::InvalidCredentials, "the e-mail or password is wrong")
}

/// Sign-in limits, shared by every instance through DynamoDB. Failures lock an account (or a
/// source address) out for the rest of a 15-minute window; requests are capped per source.
const FAILURE_WINDOW_SECONDS: i64 = 15 * 60;
const MAX_FAILURES_PER_ACCOUNT: u64 = 5;
const MAX_FAILURES_PER_SOURCE: u64 = 50;
const RATE_WINDOW_SECONDS: i64 = 60;
const MAX_AUTH_REQUESTS_PER_SOURCE: u64 = 60;

fn too_many(message: &str, retry_after: i64) -> Response {
    let mut response = ApiError::new(ErrorCode::RateLimited, message)
        .with_details(serde_json::json!({ "retry_after_seconds": retry_after }))
        .into_response();
    if let Ok(value) = axum::http::HeaderValue::from_str(&retry_after.max(1).to_string()) {
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, value);
    }
    response
}

/// Counts the request against its source's rate; `Err` is the 429 to answer with.
async fn within_rate(store: &Store, source: &SourceIp, now: i64) -> Result<(), Response> {
    let key = format!("auth-rate#{}", source.0);
    let message = "too many requests from this address; slow down";
    within_limit(store, &key, RATE_WINDOW_SECONDS, MAX_AUTH_REQUESTS_PER_SOURCE, message, now).await
}

/// Counts one hit on `key`; `Err` is the 429 to answer with once `max` is passed in the window.
async fn within_limit(
    store: &Store,
    key: &str,
    window_seconds: i64,
    max: u64,
    message: &str,
    now: i64,
) -> Result<(), Response> {
    match store.count_hit(key, window_seconds, now).await {
        Ok(hits) if hits.count > max => Err(too_many(message, hits.resets_in)),
        Ok(_) => Ok(()),
        Err(error) => Err(ApiError::from(error).into_response()),
    }
}

async fn verify(password: String, stored_hash: Option<String>) -> Result<bool, ApiError> {
    // argon2 is CPU-bound by design: off the async threads, so it does not stall other requests.
    tokio::task::spawn_blocking(move || verify_password(&password, stored_hash.as_deref()))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

async fn login(
    State(state): State<AuthState>,
    source: SourceIp,
    Json(request): Json<LoginRequest>,
) -> Result<Response, Response> {
    let now = OffsetDateTime::now_utc();
    let now_s = now.unix_timestamp();
    within_rate(&state.store, &source, now_s).await?;
    if request.password.is_empty() || request.password.len() > 1024 {
        return Err(ApiError::invalid_field("password", "must be 1 to 1024 bytes").into_response());
    }
    let email = Email::parse(&request.email).map_err(|e| ApiError::from(e).into_response())?;
    // Counted by the e-mail as typed, known or not, so a lockout reveals nothing either.
    let account_key = format!("login-failures#{email}");
    let source_key = format!("login-failures-from#{}", source.0);
    let store = &state.store;
    let (account, from_source) = tokio::try_join!(
        store.count_in_window(&account_key, FAILURE_WINDOW_SECONDS, now_s),
        store.count_in_window(&source_key, FAILURE_WINDOW_SECONDS, now_s),
    )
    .map_err(|e| ApiError::from(e).into_response())?;
    if account.count >= MAX_FAILURES_PER_ACCOUNT || from_source.count >= MAX_FAILURES_PER_SOURCE {
        let wait = account.resets_in.max(from_source.resets_in);
        return Err(too_many("too many failed sign-ins; try again later", wait));
    }
    let user = store.get_user_by_email(&email).await.map_err(|e| ApiError::from(e).into_response())?;
    // Unknown e-mail and wrong password cost the same hash and give the same answer, so the
    // endpoint does not reveal which accounts exist.
    let password_ok = verify(request.password, user.as_ref().map(|u| u.password_hash.clone()))
        .await
        .map_err(IntoResponse::into_response)?;
    let user = match user {
        Some(user) if password_ok && user.active => user,
        _ => {
            let counted = tokio::try_join!(
                store.count_hit(&account_key, FAILURE_WINDOW_SECONDS, now_s),
                store.count_hit(&source_key, FAILURE_WINDOW_SECONDS, now_s),
            );
            if let Err(error) = counted {
                tracing::warn!(%error, "failed sign-in not counted");
            }
            return Err(invalid_credentials().into_response());
        }
    };
    if account.count > 0
        && let Err(error) = store.clear_count(&account_key, FAILURE_WINDOW_SECONDS, now_s).await
    {
        tracing::warn!(%error, "failure count not cleared");
    }
    let caller = user.caller();
    let family = uuid::Uuid::new_v4().to_string();
    let issued =
        state.keys.issue(&caller, &family, now).map_err(|e| ApiError::internal(e).into_response())?;
    store
        .start_session(&family, &user.id, &issued.refresh_jti, issued.refresh_expires_at)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    if let Err(error) = store.record_login(&user, now).await {
        tracing::warn!(%error, "last_login not recorded");
    }
    Ok(axum::Json(issued.pair).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangePasswordRequest {
    current_password: String,
    new_password: String,
}

/// Changes the signed-in user's password after checking the current one; the new one must
/// pass the password policy.
async fn change_password(
    State(state): State<AuthState>,
    SignedIn(claims): SignedIn,
    Json(request): Json<ChangePasswordRequest>,
) -> Result<Response, Response> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    // Per caller: a stolen access token must not become a password-guessing oracle.
    let guesses = format!("password-checks#{}", claims.sub);
    let message = "too many password changes; try again later";
    within_limit(&state.store, &guesses, FAILURE_WINDOW_SECONDS, MAX_FAILURES_PER_ACCOUNT, message, now)
        .await?;
    apply_password_change(&state, &claims, request)
        .await
        .map(IntoResponse::into_response)
        .map_err(IntoResponse::into_response)
}

async fn signed_in_user(state: &AuthState, claims: &dotmac_tokens::Claims) -> Result<UserRecord, ApiError> {
    state
        .store
        .get_user(&UserHome::of(claims.tid, claims.pid.as_ref()), &claims.sub)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "the signed-in account has no user record"))
}

async fn apply_password_change(
    state: &AuthState,
    claims: &dotmac_tokens::Claims,
    request: ChangePasswordRequest,
) -> Result<StatusCode, ApiError> {
    let user = signed_in_user(state, claims).await?;
    if request.current_password.len() > 1024
        || !verify(request.current_password, Some(user.password_hash.clone())).await?
    {
        return Err(ApiError::invalid_field("current_password", "is not this account's password"));
    }
    dotmac_domain::password_policy::check(&request.new_password, &user.email)?;
    let new_password = request.new_password;
    let hash = tokio::task::spawn_blocking(move || hash_password(&new_password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    state.store.set_password_hash(&user, &hash).await?;
    tracing::info!(user_id = %user.id, "password changed");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    refresh_token: String,
}

fn refresh_refused(why: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidToken, format!("the refresh token is {why}; sign in again"))
}

/// Trades a refresh token for a new pair. The old refresh token stops working; presenting it
/// again (a replay, or a thief racing the owner) revokes the whole session.
async fn refresh(
    State(state): State<AuthState>,
    source: SourceIp,
    Json(request): Json<RefreshRequest>,
) -> Result<Response, Response> {
    within_rate(&state.store, &source, OffsetDateTime::now_utc().unix_timestamp()).await?;
    rotate(&state, request).await.map(IntoResponse::into_response).map_err(IntoResponse::into_response)
}

async fn rotate(state: &AuthState, request: RefreshRequest) -> Result<impl IntoResponse + use<>, ApiError> {
    let claims = state.keys.verify(&request.refresh_token, TokenKind::Refresh).map_err(|error| {
        tracing::info!(%error, "refresh token refused");
        refresh_refused("invalid or expired")
    })?;
    let family = claims.fam.clone().ok_or_else(|| refresh_refused("not part of a session"))?;
    let now = OffsetDateTime::now_utc();
    // The user is read fresh: roles may have changed and the account may be disabled.
    let user = state
        .store
        .get_user(&UserHome::of(claims.tid, claims.pid.as_ref()), &claims.sub)
        .await?
        .filter(|u| u.active)
        .ok_or_else(|| refresh_refused("for an account that is no longer active"))?;
    let caller = user.caller();
    let issued = state.keys.issue(&caller, &family, now).map_err(ApiError::internal)?;
    match state
        .store
        .rotate_session(&family, &claims.jti, &issued.refresh_jti, issued.refresh_expires_at)
        .await?
    {
        Rotation::Rotated { .. } => Ok(axum::Json(issued.pair)),
        Rotation::Reused => {
            tracing::warn!(user_id = %user.id, %family, "refresh token reused; session revoked");
            Err(ApiError::new(
                ErrorCode::TokenReused,
                "this refresh token was already used; the session is revoked",
            ))
        }
        Rotation::Revoked => Err(refresh_refused("from a session that was signed out")),
        Rotation::Unknown => Err(refresh_refused("from an unknown session")),
    }
}

/// Signs out: this access token stops working at once (on every instance, through the
/// deny-list) and the session's refresh token with it.
async fn logout(State(state): State<AuthState>, SignedIn(claims): SignedIn) -> Result<StatusCode, ApiError> {
    dotmac_tokens::revoke_token(&state.store, &claims.jti, claims.exp).await?;
    if let Some(family) = &claims.fam {
        state.store.revoke_session(family).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user, as stored (never the password hash).
async fn me(
    State(state): State<AuthState>,
    SignedIn(claims): SignedIn,
) -> Result<impl IntoResponse, ApiError> {
    let user = signed_in_user(&state, &claims).await?;
    Ok(axum::Json(serde_json::to_value(user.public()).map_err(ApiError::internal)?))
}
