//! Signing in and refreshing, as use cases: no HTTP in them, so a portal page or a test drives
//! exactly what `POST /v1/auth/login` and `/v1/auth/refresh` do, clock included.
//!
//! Lockout: every attempt is counted (an atomic add that answers the new count) *before* the
//! password is checked, so concurrent guesses can never get more than the limit verified.
//! - An (account, source) pair is locked after `MAX_FAILURES_PER_PAIR` failures in the window:
//!   a guesser locks itself out, not the account's owner signing in from elsewhere.
//! - A source is locked after `MAX_FAILURES_PER_SOURCE` failures across all accounts.
//! - The account-wide count only slows attempts down (`account_delay`), from every source, so
//!   a distributed guesser gets few guesses without being able to lock the owner out.
//!
//! A success gives back what it was counted against. Locks of platform staff accounts are
//! logged as the `identity.staff_account_locked` event, which the template alarms on.

use dotmac_domain::{Email, InvalidValue};
use dotmac_store::{NewSession, Rotation, Store, StoreError, UserHome, WindowCount, unix_ms};
use dotmac_tokens::{Issued, JwtKeys, SessionTerm, TokenKind, verify_password};
use std::time::Duration;
use time::OffsetDateTime;

/// Sign-in limits, shared by every instance through DynamoDB, per fixed 15-minute window.
pub const FAILURE_WINDOW_SECONDS: i64 = 15 * 60;
pub const MAX_FAILURES_PER_PAIR: u64 = 5;
pub const MAX_FAILURES_PER_SOURCE: u64 = 50;
/// Account-wide failures (from any source) beyond which every attempt waits `account_delay`.
pub const FREE_ACCOUNT_FAILURES: u64 = 5;
/// The longest an attempt is held back, however many failures the account has.
pub const MAX_ACCOUNT_DELAY: Duration = Duration::from_secs(4);
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

/// How long an attempt waits when its account has `failures` failures in the window
/// (counting this attempt): nothing up to `FREE_ACCOUNT_FAILURES`, then doubling from a
/// quarter second up to `MAX_ACCOUNT_DELAY`.
pub fn account_delay(failures: u64) -> Duration {
    let beyond = failures.saturating_sub(FREE_ACCOUNT_FAILURES);
    if beyond == 0 {
        return Duration::ZERO;
    }
    let quarter_seconds = 1u64 << (beyond - 1).min(8);
    Duration::from_millis(250 * quarter_seconds).min(MAX_ACCOUNT_DELAY)
}

async fn verify(password: String, stored_hash: Option<String>) -> Result<bool, SignInError> {
    // argon2 is CPU-bound by design: off the async threads, so it does not stall other requests.
    tokio::task::spawn_blocking(move || verify_password(&password, stored_hash.as_deref()))
        .await
        .map_err(|e| SignInError::Internal(e.to_string()))?
        .map_err(|e| SignInError::Internal(e.to_string()))
}

/// The three counters one attempt is counted against, by the e-mail as typed (known or not,
/// so a lockout reveals nothing either).
struct Counters {
    pair: String,
    account: String,
    source: String,
}

impl Counters {
    fn of(email: &Email, source: &str) -> Counters {
        Counters {
            pair: format!("login-failures#{email}#from#{source}"),
            account: format!("login-failures#{email}"),
            source: format!("login-failures-from#{source}"),
        }
    }

    /// Counts the attempt on all three at once.
    async fn count(&self, store: &Store, now: i64) -> Result<[WindowCount; 3], SignInError> {
        let (pair, account, source) = tokio::try_join!(
            store.count_hit(&self.pair, FAILURE_WINDOW_SECONDS, now),
            store.count_hit(&self.account, FAILURE_WINDOW_SECONDS, now),
            store.count_hit(&self.source, FAILURE_WINDOW_SECONDS, now),
        )?;
        Ok([pair, account, source])
    }

    /// A success was not a failure: the pair starts over, and the account and source get
    /// back the one they were counted. Best effort: a lost give-back only errs strict.
    async fn give_back(&self, store: &Store, now: i64) {
        let given = tokio::try_join!(
            store.clear_count(&self.pair, FAILURE_WINDOW_SECONDS, now),
            store.uncount_hit(&self.account, FAILURE_WINDOW_SECONDS, now),
            store.uncount_hit(&self.source, FAILURE_WINDOW_SECONDS, now),
        );
        if let Err(error) = given {
            tracing::warn!(%error, "a successful sign-in's counts not given back");
        }
    }
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
    let counters = Counters::of(&email, source);
    let [pair, account, from_source] = counters.count(store, now_s).await?;
    if pair.count > MAX_FAILURES_PER_PAIR || from_source.count > MAX_FAILURES_PER_SOURCE {
        let locked = if pair.count > MAX_FAILURES_PER_PAIR { pair } else { from_source };
        return Err(SignInError::RateLimited {
            message: "too many failed sign-ins; try again later",
            retry_after_seconds: locked.resets_in,
        });
    }
    tokio::time::sleep(account_delay(account.count)).await;
    let user = store.get_user_by_email(&email).await?;
    // Unknown e-mail and wrong password cost the same hash and give the same answer, so the
    // endpoint does not reveal which accounts exist.
    let password_ok = verify(password, user.as_ref().map(|u| u.password_hash.clone())).await?;
    let user = match user {
        Some(user) if password_ok && user.active => user,
        user => {
            if pair.count == MAX_FAILURES_PER_PAIR
                && let Some(staff) = user.as_ref().filter(|u| u.home() == UserHome::Platform)
            {
                tracing::warn!(
                    event = "identity.staff_account_locked",
                    user_id = %staff.id,
                    source,
                    account_failures = account.count,
                    "a platform staff account is locked for one source"
                );
            }
            return Err(SignInError::InvalidCredentials);
        }
    };
    counters.give_back(store, now_s).await;
    let family = uuid::Uuid::new_v4().to_string();
    let session = SessionTerm { family: &family, ends_at: keys.session_ends_at(now) };
    let issued =
        keys.issue(&user.caller(), &session, now).map_err(|e| SignInError::Internal(e.to_string()))?;
    let started = NewSession {
        family: &family,
        user_id: &user.id,
        refresh_jti: &issued.refresh_jti,
        started_at_ms: unix_ms(now),
        ends_at: session.ends_at,
    };
    store.start_session(&started).await?;
    if let Err(error) = store.record_login(&user, now).await {
        tracing::warn!(%error, "last_login not recorded");
    }
    Ok(issued)
}

/// Trades a refresh token for a new pair. The old refresh token stops working; presenting it
/// again (a replay, or a thief racing the owner) revokes the whole session. A session that
/// was ended (signed out, its user's sessions ended, past its absolute end) refreshes no more.
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
    let (Some(family), Some(ends_at)) = (claims.fam.clone(), claims.sxp) else {
        return Err(SignInError::RefreshRefused("not part of a session"));
    };
    // The user is read fresh: roles may have changed and the account may be disabled.
    let user = store
        .get_user(&UserHome::of(claims.tid, claims.pid.as_ref()), &claims.sub)
        .await?
        .filter(|u| u.active)
        .ok_or(SignInError::RefreshRefused("for an account that is no longer active"))?;
    let session = SessionTerm { family: &family, ends_at };
    let issued =
        keys.issue(&user.caller(), &session, now).map_err(|e| SignInError::Internal(e.to_string()))?;
    let rotation =
        store.rotate_session(&family, &claims.jti, &issued.refresh_jti, &user, now.unix_timestamp()).await?;
    match rotation {
        Rotation::Rotated => Ok(issued),
        Rotation::Reused => {
            tracing::warn!(user_id = %user.id, %family, "refresh token reused; session revoked");
            Err(SignInError::RefreshReused)
        }
        Rotation::Revoked => Err(SignInError::RefreshRefused("from a session that was signed out")),
        Rotation::Ended => Err(SignInError::RefreshRefused(
            "from a session ended by a password change or a sign-out everywhere",
        )),
        Rotation::Expired => Err(SignInError::RefreshRefused("from a session past its maximum lifetime")),
        Rotation::Unknown => Err(SignInError::RefreshRefused("from an unknown session")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_wide_count_slows_down_without_ever_refusing() {
        assert_eq!(account_delay(0), Duration::ZERO);
        assert_eq!(account_delay(FREE_ACCOUNT_FAILURES), Duration::ZERO);
        assert_eq!(account_delay(FREE_ACCOUNT_FAILURES + 1), Duration::from_millis(250));
        assert_eq!(account_delay(FREE_ACCOUNT_FAILURES + 2), Duration::from_millis(500));
        assert_eq!(account_delay(FREE_ACCOUNT_FAILURES + 4), Duration::from_secs(2));
        assert_eq!(account_delay(FREE_ACCOUNT_FAILURES + 5), MAX_ACCOUNT_DELAY);
        assert_eq!(account_delay(u64::MAX), MAX_ACCOUNT_DELAY);
        let delays: Vec<Duration> = (0..40).map(account_delay).collect();
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "never shrinks as failures grow");
    }
}
