//! What a signed-in person does to their own account and sessions, as use cases (no HTTP, the
//! clock a parameter): change the password, sign out here, sign out everywhere.

use dotmac_domain::InvalidValue;
use dotmac_store::{Store, StoreError, UserHome, UserRecord, unix_ms};
use dotmac_tokens::{Claims, hash_password, verify_password};
use time::OffsetDateTime;

use crate::sign_in::{FAILURE_WINDOW_SECONDS, MAX_FAILURES_PER_PAIR, SignInError, within_limit};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("the signed-in account has no user record")]
    NoUserRecord,
    #[error("is not this account's password")]
    WrongCurrentPassword,
    #[error(transparent)]
    Policy(#[from] InvalidValue),
    #[error("the session ended meanwhile; sign in again")]
    SessionEnded,
    #[error(transparent)]
    Limited(#[from] SignInError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

async fn signed_in_user(store: &Store, claims: &Claims) -> Result<UserRecord, AccountError> {
    store
        .get_user(&UserHome::of(claims.tid, claims.pid.as_ref()), &claims.sub)
        .await?
        .ok_or(AccountError::NoUserRecord)
}

/// The signed-in user's record.
pub async fn me(store: &Store, claims: &Claims) -> Result<UserRecord, AccountError> {
    signed_in_user(store, claims).await
}

async fn off_the_async_threads<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, AccountError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AccountError::Internal(e.to_string()))?
        .map_err(|e| AccountError::Internal(e.to_string()))
}

/// Checks the current password, applies the policy to the new one, and sets it; every other
/// session of the user ends in the same write, the caller's own carries on.
pub async fn change_password(
    store: &Store,
    claims: &Claims,
    current: String,
    new: String,
    now: OffsetDateTime,
) -> Result<(), AccountError> {
    // Per caller: a stolen access token must not become a password-guessing oracle.
    let guesses = format!("password-checks#{}", claims.sub);
    let message = "too many password changes; try again later";
    let now_s = now.unix_timestamp();
    within_limit(store, &guesses, FAILURE_WINDOW_SECONDS, MAX_FAILURES_PER_PAIR, message, now_s).await?;
    let user = signed_in_user(store, claims).await?;
    let stored = user.password_hash.clone();
    let matches = current.len() <= 1024
        && off_the_async_threads(move || verify_password(&current, Some(&stored))).await?;
    if !matches {
        return Err(AccountError::WrongCurrentPassword);
    }
    dotmac_domain::password_policy::check(&new, &user.email)?;
    let hash = off_the_async_threads(move || hash_password(&new)).await?;
    if !store.end_sessions(&user, unix_ms(now), Some(&hash), claims.fam.as_deref()).await? {
        return Err(AccountError::SessionEnded);
    }
    tracing::info!(user_id = %user.id, "password changed; other sessions ended");
    Ok(())
}

/// Ends the caller's session (every token issued in it); a machine token, which has none, is
/// signed out alone.
pub async fn sign_out(store: &Store, claims: &Claims) -> Result<(), AccountError> {
    match &claims.fam {
        Some(family) => store.revoke_session(family).await?,
        None => dotmac_tokens::revoke_token(store, &claims.jti, claims.exp).await?,
    }
    Ok(())
}

/// Ends every session of the caller's user, this one too.
pub async fn sign_out_everywhere(
    store: &Store,
    claims: &Claims,
    now: OffsetDateTime,
) -> Result<(), AccountError> {
    let user = signed_in_user(store, claims).await?;
    if !store.end_sessions(&user, unix_ms(now), None, None).await? {
        return Err(AccountError::NoUserRecord);
    }
    tracing::info!(user_id = %user.id, "signed out everywhere");
    Ok(())
}
