//! The auth function: sign-in, rotating refresh, sign-out, "who am I", the JWKS, and
//! password hashing.

mod passwords;

pub use passwords::{PasswordError, hash_password, verify_password};

use axum::extract::{FromRef, State};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use dotmac_domain::{Caller, Email};
use dotmac_http::{Access, ApiError, ApiRoutes, ErrorCode, Json, JwtKeys, Routes, SignedIn, TokenKind};
use dotmac_store::{Rotation, Store};
use serde::Deserialize;
use std::sync::Arc;
use time::OffsetDateTime;

#[derive(Clone)]
pub struct AuthState {
    pub store: Store,
    pub keys: Arc<JwtKeys>,
}

impl FromRef<AuthState> for Arc<JwtKeys> {
    fn from_ref(state: &AuthState) -> Self {
        state.keys.clone()
    }
}

impl FromRef<AuthState> for Store {
    fn from_ref(state: &AuthState) -> Self {
        state.store.clone()
    }
}

pub fn router(state: AuthState) -> ApiRoutes {
    // Built now, at cold start, so the first sign-in with an unknown e-mail costs no more
    // than any other.
    let _ = passwords::decoy_hash();
    Routes::new()
        .route(Method::POST, "/v1/auth/login", Access::Public, login)
        .route(Method::POST, "/v1/auth/refresh", Access::Public, refresh)
        .route(Method::POST, "/v1/auth/logout", Access::SelfService, logout)
        .route(Method::GET, "/v1/auth/me", Access::SelfService, me)
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

async fn login(
    State(state): State<AuthState>,
    Json(request): Json<LoginRequest>,
) -> Result<impl IntoResponse, ApiError> {
    if request.password.is_empty() || request.password.len() > 1024 {
        return Err(ApiError::invalid_field("password", "must be 1 to 1024 bytes"));
    }
    let email = Email::parse(&request.email)?;
    let user = state.store.get_user_by_email(&email).await?;
    // Unknown e-mail and wrong password cost the same hash and give the same answer, so the
    // endpoint does not reveal which accounts exist.
    // argon2 is CPU-bound by design: off the async threads, so it does not stall other requests.
    let stored_hash = user.as_ref().map(|u| u.password_hash.clone());
    let password = request.password;
    let password_ok = tokio::task::spawn_blocking(move || verify_password(&password, stored_hash.as_deref()))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let user = match user {
        Some(user) if password_ok && user.active => user,
        _ => return Err(invalid_credentials()),
    };
    let now = OffsetDateTime::now_utc();
    let caller = Caller { user_id: user.id.clone(), tenant_id: user.tenant_id, roles: user.roles.clone() };
    let family = uuid::Uuid::new_v4().to_string();
    let issued = state.keys.issue(&caller, &family, now).map_err(ApiError::internal)?;
    state.store.start_session(&family, &user.id, &issued.refresh_jti, issued.refresh_expires_at).await?;
    if let Err(error) = state.store.record_login(&user.id, now).await {
        tracing::warn!(%error, "last_login not recorded");
    }
    Ok(axum::Json(issued.pair))
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
    Json(request): Json<RefreshRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let claims = state.keys.verify(&request.refresh_token, TokenKind::Refresh).map_err(|error| {
        tracing::info!(%error, "refresh token refused");
        refresh_refused("invalid or expired")
    })?;
    let family = claims.fam.clone().ok_or_else(|| refresh_refused("not part of a session"))?;
    let now = OffsetDateTime::now_utc();
    // The user is read fresh: roles may have changed and the account may be disabled.
    let user = state
        .store
        .get_user(&claims.sub)
        .await?
        .filter(|u| u.active)
        .ok_or_else(|| refresh_refused("for an account that is no longer active"))?;
    let caller = Caller { user_id: user.id.clone(), tenant_id: user.tenant_id, roles: user.roles.clone() };
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
    state.store.deny_token(&claims.jti, claims.exp).await?;
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
    let user = state
        .store
        .get_user(&claims.sub)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "the signed-in user no longer exists"))?;
    Ok(axum::Json(serde_json::json!({
        "id": user.id,
        "email": user.email,
        "tenant_id": user.tenant_id,
        "roles": user.roles,
        "active": user.active,
        "created_at": user.created_at.format(&time::format_description::well_known::Rfc3339).ok(),
        "last_login": user.last_login.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
    })))
}
