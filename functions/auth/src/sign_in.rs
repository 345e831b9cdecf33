//! Signing in and refreshing, as use cases: no HTTP in them, so a portal page or a test drives
//! exactly what `POST /v1/auth/login` and `/v1/auth/refresh` do, clock included.

use dotmac_domain::{Email, InvalidValue};
use dotmac_store::{Rotation, Store, StoreError, UserHome};
use dotmac_tokens::{Issued, JwtKeys, TokenKind, verify_password};
use time::OffsetDateTime;

/// Sign-in limits, shared by every instance through DynamoDB. Failures lock an account (or a
/// source address) out for the rest of a 15-minute window; requests are capped per source.
pub const FAILURE_WINDOW_SECONDS: i64 = 15 * 60;
pub const MAX_FAILURES_PER_ACCOUNT: u64 = 5;
pub const MAX_FAILURES_PER_SOURCE: u64 = 50;
pub const RATE_WINDOW_SECONDS: i64 = 60;
pub const MAX_AUTH_REQUESTS_PER_SOURCE: u64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("{message}")]
    RateLimited { message: &'static str, retry_after_seconds: i64 },
    #[error("the e-mail or password is wrong")]
    InvalidCredentials,
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
    #[error("the refresh token is {0}; sign in again")]
    RefreshRefused(&'static str),
    #[error("this refresh token was already used; the session is revoked")]
    RefreshReused,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

/// Counts one hit on `key`; `Err` once `max` is passed in the window.
pub async fn within_limit(
    store: &Store,
    key: &str,
    window_seconds: i64,
    max: u64,
    message: &'static str,
    now: i64,
) -> Result<(), SignInError> {
    let hits = store.count_hit(key, window_seconds, now).await?;
    if hits.count > max {
        return Err(SignInError::RateLimited { message, retry_after_seconds: hits.resets_in });
    }
    Ok(())
}

/// Counts an auth request against its source's rate.
pub async fn within_rate(store: &Store, source: &str, now: i64) -> Result<(), SignInError> {
    let key = format!("auth-rate#{source}");
    let message = "too many requests from this address; slow down";
    within_limit(store, &key, RATE_WINDOW_SECONDS, MAX_AUTH_REQUESTS_PER_SOURCE, message, now).await
}

async fn verify(password: String, stored_hash: Option<String>) -> Result<bool, SignInError> {
    // argon2 is CPU-bound by design: off the async threads, so it does not stall other requests.
    tokio::task::spawn_blocking(move || verify_password(&password, stored_hash.as_deref()))
        .await
        .map_err(|e| SignInError::Internal(e.to_string()))?
        .map_err(|e| SignInError::Internal(e.to_string()))
}

/// Signs in with an e-mail and password from `source`: a token pair and a new session, or a
/// refusal that says nothing of whether the account exists.
pub async fn sign_in(
    store: &Store,
    keys: &JwtKeys,
    source: &str,
    email: &str,
    password: String,
    now: OffsetDateTime,
) -> Result<Issued, SignInError> {
    let now_s = now.unix_timestamp();
    within_rate(store, source, now_s).await?;
    if password.is_empty() || password.len() > 1024 {
        return Err(InvalidValue::new("password", "must be 1 to 1024 bytes").into());
    }
    let email = Email::parse(email)?;
    // Counted by the e-mail as typed, known or not, so a lockout reveals nothing either.
    let account_key = format!("login-failures#{email}");
    let source_key = format!("login-failures-from#{source}");
    let (account, from_source) = tokio::try_join!(
        store.count_in_window(&account_key, FAILURE_WINDOW_SECONDS, now_s),
        store.count_in_window(&source_key, FAILURE_WINDOW_SECONDS, now_s),
    )?;
    if account.count >= MAX_FAILURES_PER_ACCOUNT || from_source.count >= MAX_FAILURES_PER_SOURCE {
        return Err(SignInError::RateLimited {
            message: "too many failed sign-ins; try again later",
            retry_after_seconds: account.resets_in.max(from_source.resets_in),
        });
    }
    let user = store.get_user_by_email(&email).await?;
    // Unknown e-mail and wrong password cost the same hash and give the same answer, so the
    // endpoint does not reveal which accounts exist.
    let password_ok = verify(password, user.as_ref().map(|u| u.password_hash.clone())).await?;
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
            return Err(SignInError::InvalidCredentials);
        }
    };
    if account.count > 0
        && let Err(error) = store.clear_count(&account_key, FAILURE_WINDOW_SECONDS, now_s).await
    {
        tracing::warn!(%error, "failure count not cleared");
    }
    let family = uuid::Uuid::new_v4().to_string();
    let issued =
        keys.issue(&user.caller(), &family, now).map_err(|e| SignInError::Internal(e.to_string()))?;
    store.start_session(&family, &user.id, &issued.refresh_jti, issued.refresh_expires_at).await?;
    if let Err(error) = store.record_login(&user, now).await {
        tracing::warn!(%error, "last_login not recorded");
    }
    Ok(issued)
}

/// Trades a refresh token for a new pair. The old refresh token stops working; presenting it
/// again (a replay, or a thief racing the owner) revokes the whole session.
pub async fn refresh(
    store: &Store,
    keys: &JwtKeys,
    refresh_token: &str,
    now: OffsetDateTime,
) -> Result<Issued, SignInError> {
    let claims = keys.verify(refresh_token, TokenKind::Refresh).map_err(|error| {
        tracing::info!(%error, "refresh token refused");
        SignInError::RefreshRefused("invalid or expired")
    })?;
    let family = claims.fam.clone().ok_or(SignInError::RefreshRefused("not part of a session"))?;
    // The user is read fresh: roles may have changed and the account may be disabled.
    let user = store
        .get_user(&UserHome::of(claims.tid, claims.pid.as_ref()), &claims.sub)
        .await?
        .filter(|u| u.active)
        .ok_or(SignInError::RefreshRefused("for an account that is no longer active"))?;
    let issued =
        keys.issue(&user.caller(), &family, now).map_err(|e| SignInError::Internal(e.to_string()))?;
    match store.rotate_session(&family, &claims.jti, &issued.refresh_jti, issued.refresh_expires_at).await? {
        Rotation::Rotated { .. } => Ok(issued),
        Rotation::Reused => {
            tracing::warn!(user_id = %user.id, %family, "refresh token reused; session revoked");
            Err(SignInError::RefreshReused)
        }
        Rotation::Revoked => Err(SignInError::RefreshRefused("from a session that was signed out")),
        Rotation::Unknown => Err(SignInError::RefreshRefused("from an unknown session")),
    }
}
