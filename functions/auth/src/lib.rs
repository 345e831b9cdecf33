//! The auth function: sign-in and password hashing.

mod passwords;

pub use passwords::{PasswordError, hash_password, verify_password};

use axum::extract::{FromRef, State};
use axum::http::Method;
use axum::response::IntoResponse;
use dotmac_domain::{Caller, Email};
use dotmac_http::{Access, ApiError, ApiRoutes, ErrorCode, Json, JwtKeys, Routes};
use dotmac_store::Store;
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

pub fn router(state: AuthState) -> ApiRoutes {
    // Built now, at cold start, so the first sign-in with an unknown e-mail costs no more
    // than any other.
    let _ = passwords::decoy_hash();
    Routes::new()
        .route(Method::POST, "/v1/auth/login", Access::Public, login)
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
    let pair = state.keys.issue(&caller, now).map_err(ApiError::internal)?;
    if let Err(error) = state.store.record_login(&user.email, now).await {
        tracing::warn!(%error, "last_login not recorded");
    }
    Ok(axum::Json(pair))
}
