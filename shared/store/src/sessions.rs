//! Sign-in sessions: each sign-in starts a session (a refresh-token family); every refresh
//! rotates the session's one valid refresh token, and presenting an old one revokes the whole
//! session (a stolen refresh token is detected the moment either party uses it after the
//! other). A session ends when it is signed out, at its absolute end (refreshing never moves
//! it), or when its user's `sessions_valid_after_ms` mark passes its start: a password
//! change, "sign out everywhere", a deactivation or a change of roles sets that mark.
//! Every access token names its session, so ending the session refuses all of them at once.
//! Machine tokens have no session; they are signed out one by one through the deny-list.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use crate::dynamo::{Attributes, Expr, ITEM_EXISTS, ITEM_IS_NEW, Item, Read};
use crate::keys::{EXPIRES_AT, ItemKey, n, s};
use crate::users::UserRecord;
use crate::{Store, StoreError};

/// The user attribute that ends every session started at or before it (ms since the epoch).
pub(crate) const SESSIONS_VALID_AFTER: &str = "sessions_valid_after_ms";

/// Milliseconds since the epoch: the resolution sessions are ordered in against their
/// user's mark (a session started in the same second as a mark, after it, survives it).
pub fn unix_ms(at: time::OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The presented token was the session's current one; the new one replaces it.
    Rotated,
    /// An older token of the session was presented: the session is now revoked.
    Reused,
    /// The session was signed out or revoked earlier.
    Revoked,
    /// The session was ended by its user's mark (password change, sign-out everywhere, ...).
    Ended,
    /// The session reached its absolute end.
    Expired,
    /// No such session (expired long ago, or never existed).
    Unknown,
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user_id: String,
    pub revoked: bool,
    /// When it started (ms since the epoch), compared with the user's mark.
    pub started_at_ms: i64,
    /// Its absolute end (seconds since the epoch).
    pub ends_at: i64,
}

impl Session {
    fn from_item(item: &Item) -> Result<Session, StoreError> {
        Ok(Session {
            user_id: item.string("user_id")?,
            revoked: item.optional_bool("revoked").unwrap_or(true),
            started_at_ms: item.number("started_at_ms")?,
            ends_at: item.number("ends_at")?,
        })
    }

    /// Why a token of this session, held by `user`, is refused at `now` (seconds), if it is.
    pub fn refusal(&self, user: Option<&UserRecord>, now: i64) -> Option<SessionRefusal> {
        let Some(user) = user.filter(|user| user.id == self.user_id) else {
            return Some(SessionRefusal::AccountGone);
        };
        if self.revoked {
            Some(SessionRefusal::SignedOut)
        } else if now >= self.ends_at {
            Some(SessionRefusal::Expired)
        } else if !user.active {
            Some(SessionRefusal::AccountInactive)
        } else if self.started_at_ms <= user.sessions_valid_after_ms {
            Some(SessionRefusal::Ended)
        } else {
            None
        }
    }
}

/// Why a session's tokens are no longer good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionRefusal {
    #[error("the session was signed out")]
    SignedOut,
    #[error("the session reached its maximum lifetime; sign in again")]
    Expired,
    #[error("the session was ended by a password change or a sign-out everywhere; sign in again")]
    Ended,
    #[error("the account is deactivated")]
    AccountInactive,
    #[error("the account no longer exists")]
    AccountGone,
    #[error("the session is unknown or expired")]
    Unknown,
}

/// What a sign-in starts.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    pub family: &'a str,
    pub user_id: &'a str,
    pub refresh_jti: &'a str,
    pub started_at_ms: i64,
    pub ends_at: i64,
}

fn not_revoked() -> Expr {
    Expr::new("revoked = :no").value(":no", AttributeValue::Bool(false))
}

impl Store {
    pub async fn start_session(&self, session: &NewSession<'_>) -> Result<(), StoreError> {
        let mut item = ItemKey::session(session.family).into_item();
        item.extend([
            ("entity".to_owned(), s("session")),
            ("user_id".to_owned(), s(session.user_id)),
            ("current_jti".to_owned(), s(session.refresh_jti)),
            ("revoked".to_owned(), AttributeValue::Bool(false)),
            ("started_at_ms".to_owned(), n(session.started_at_ms)),
            ("ends_at".to_owned(), n(session.ends_at)),
            // Kept a day past its end so a late refresh still reads "expired", not "unknown".
            (EXPIRES_AT.to_owned(), n(session.ends_at.saturating_add(24 * 3600))),
        ]);
        Ok(self.put(item, Some(Expr::new(ITEM_IS_NEW))).await??)
    }

    pub async fn get_session(&self, family: &str) -> Result<Option<Session>, StoreError> {
        let item = self.read_item(ItemKey::session(family), Read::Consistent, None).await?;
        item.as_ref().map(Session::from_item).transpose()
    }

    /// Swaps `presented_jti` for `next_jti` if it is still the session's current token and
    /// the session is still good for `user` at `now`.
    pub async fn rotate_session(
        &self,
        family: &str,
        presented_jti: &str,
        next_jti: &str,
        user: &UserRecord,
        now: i64,
    ) -> Result<Rotation, StoreError> {
        let swap = Expr::new("SET current_jti = :next").value(":next", s(next_jti));
        let current = not_revoked()
            .and("current_jti = :presented AND user_id = :user AND ends_at > :now AND started_at_ms > :after")
            .value(":presented", s(presented_jti))
            .value(":user", s(&user.id))
            .value(":now", n(now))
            .value(":after", n(user.sessions_valid_after_ms));
        let key = ItemKey::session(family);
        if self.update(key.clone(), swap, Some(current), Some(ReturnValue::None)).await?.is_ok() {
            return Ok(Rotation::Rotated);
        }
        let Some(session) = self.get_session(family).await? else {
            return Ok(Rotation::Unknown);
        };
        match session.refusal(Some(user), now) {
            Some(SessionRefusal::SignedOut) => Ok(Rotation::Revoked),
            Some(SessionRefusal::Expired) => Ok(Rotation::Expired),
            Some(SessionRefusal::AccountGone | SessionRefusal::Unknown) => Ok(Rotation::Unknown),
            Some(SessionRefusal::Ended | SessionRefusal::AccountInactive) => Ok(Rotation::Ended),
            // Good session, stale token: a replay. The session goes.
            None => {
                self.revoke_session(family).await?;
                Ok(Rotation::Reused)
            }
        }
    }

    pub async fn revoke_session(&self, family: &str) -> Result<(), StoreError> {
        let revoke = Expr::new("SET revoked = :yes").value(":yes", AttributeValue::Bool(true));
        // Refused: nothing to revoke, the session already expired.
        let _expired =
            self.update(ItemKey::session(family), revoke, Some(Expr::new(ITEM_EXISTS)), None).await?;
        Ok(())
    }

    /// Ends every session of `user` started at or before `at_ms`, and (when `password_hash`
    /// is given) sets the new hash in the same write, so no moment exists where the new
    /// password is in force and an old session still refreshes. `keep` names the caller's own
    /// session, restarted just after the mark in the same transaction, so the person who
    /// acted stays signed in. `false` when the user (or the kept session) is gone.
    pub async fn end_sessions(
        &self,
        user: &UserRecord,
        at_ms: i64,
        password_hash: Option<&str>,
        keep: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut mark = Expr::new(format!("SET {SESSIONS_VALID_AFTER} = :at")).value(":at", n(at_ms));
        if let Some(hash) = password_hash {
            mark = mark.and_set("password_hash = :hash").value(":hash", s(hash));
        }
        let user_key = ItemKey::user(user.home().pk(), &user.id);
        let Some(family) = keep else {
            return Ok(self.update(user_key, mark, Some(Expr::new(ITEM_EXISTS)), None).await?.is_ok());
        };
        let restart = Expr::new("SET started_at_ms = :restarted").value(":restarted", n(at_ms + 1));
        let own = not_revoked().and("user_id = :user").value(":user", s(&user.id));
        let steps = vec![
            self.update_step(user_key, mark, Expr::new(ITEM_EXISTS))?,
            self.update_step(ItemKey::session(family), restart, own)?,
        ];
        Ok(self.transact(steps).await?.is_ok())
    }

    /// Puts an access token on the deny-list until `expires_at` (its own `exp`).
    pub async fn deny_token(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        let mut item = ItemKey::denied_token(jti).into_item();
        item.extend([("entity".to_owned(), s("denied_token")), (EXPIRES_AT.to_owned(), n(expires_at))]);
        Ok(self.put(item, None).await??)
    }

    /// Is this access token signed out? Strongly consistent: a token is refused on the
    /// request right after its sign-out.
    pub async fn is_token_denied(&self, jti: &str, now: i64) -> Result<bool, StoreError> {
        let item = self.read_item(ItemKey::denied_token(jti), Read::Consistent, Some(EXPIRES_AT)).await?;
        Ok(denied_until(item.as_ref(), now))
    }
}

/// Whether a deny entry (as read) still refuses its token at `now`. TTL deletion lags, so
/// expiry is checked here too.
pub(crate) fn denied_until(item: Option<&Item>, now: i64) -> bool {
    item.and_then(|i| i.optional_number::<i64>(EXPIRES_AT)).is_some_and(|expires_at| expires_at > now)
}

pub(crate) fn session_of(item: Option<&Item>) -> Result<Option<Session>, StoreError> {
    item.map(Session::from_item).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dotmac_domain::Email;
    use time::OffsetDateTime;

    fn user(valid_after_ms: i64, active: bool) -> UserRecord {
        UserRecord {
            id: "u1".into(),
            email: Email::parse("a@b.example").expect("email"),
            password_hash: String::new(),
            tenant_id: None,
            partner_id: None,
            roles: Vec::new(),
            active,
            created_at: OffsetDateTime::UNIX_EPOCH,
            last_login: None,
            sessions_valid_after_ms: valid_after_ms,
        }
    }

    fn session(started_at_ms: i64) -> Session {
        Session { user_id: "u1".into(), revoked: false, started_at_ms, ends_at: 1_000 }
    }

    #[test]
    fn milliseconds_order_a_session_after_a_mark_set_earlier_in_the_same_second() {
        let mark = OffsetDateTime::from_unix_timestamp(1_000).expect("time");
        let later = mark + time::Duration::milliseconds(3);
        assert!(unix_ms(later) > unix_ms(mark));
        assert_eq!(unix_ms(mark), 1_000_000);
    }

    #[test]
    fn a_session_ends_at_its_absolute_end_by_sign_out_or_by_its_users_mark() {
        let good = session(500_000);
        assert_eq!(good.refusal(Some(&user(0, true)), 999), None);
        assert_eq!(good.refusal(Some(&user(0, true)), 1_000), Some(SessionRefusal::Expired));
        assert_eq!(good.refusal(Some(&user(500_000, true)), 10), Some(SessionRefusal::Ended));
        assert_eq!(good.refusal(Some(&user(499_999, true)), 10), None, "started after the mark");
        assert_eq!(good.refusal(Some(&user(0, false)), 10), Some(SessionRefusal::AccountInactive));
        assert_eq!(good.refusal(None, 10), Some(SessionRefusal::AccountGone));
        let mut other = user(0, true);
        other.id = "u2".into();
        assert_eq!(good.refusal(Some(&other), 10), Some(SessionRefusal::AccountGone), "not its user");
        let signed_out = Session { revoked: true, ..good };
        assert_eq!(signed_out.refusal(Some(&user(0, true)), 10), Some(SessionRefusal::SignedOut));
    }
}
