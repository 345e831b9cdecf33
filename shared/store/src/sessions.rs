//! Sign-in sessions: each sign-in starts a refresh-token family; every refresh rotates the
//! family's one valid refresh token, and presenting an old one revokes the whole family
//! (a stolen refresh token is detected the moment either party uses it after the other).
//! Signed-out access tokens sit on a deny-list until they would have expired.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use crate::dynamo::{Attributes, Expr, ITEM_EXISTS, ITEM_IS_NEW, Read};
use crate::keys::{EXPIRES_AT, ItemKey, n, s};
use crate::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The presented token was the family's current one; the new one replaces it.
    Rotated { user_id: String },
    /// An older token of the family was presented: the family is now revoked.
    Reused,
    /// The family was signed out or revoked earlier.
    Revoked,
    /// No such family (expired or never existed).
    Unknown,
}

impl Store {
    pub async fn start_session(
        &self,
        family: &str,
        user_id: &str,
        refresh_jti: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let mut item = ItemKey::session(family).into_item();
        item.extend([
            ("entity".to_owned(), s("session")),
            ("user_id".to_owned(), s(user_id)),
            ("current_jti".to_owned(), s(refresh_jti)),
            ("revoked".to_owned(), AttributeValue::Bool(false)),
            (EXPIRES_AT.to_owned(), n(expires_at)),
        ]);
        Ok(self.put(item, Some(Expr::new(ITEM_IS_NEW))).await??)
    }

    /// Swaps `presented_jti` for `next_jti` if it is still the family's current token.
    pub async fn rotate_session(
        &self,
        family: &str,
        presented_jti: &str,
        next_jti: &str,
        expires_at: i64,
    ) -> Result<Rotation, StoreError> {
        let swap = Expr::new("SET current_jti = :next, expires_at = :expires")
            .value(":next", s(next_jti))
            .value(":expires", n(expires_at));
        let current = Expr::new("current_jti = :presented AND revoked = :no")
            .value(":presented", s(presented_jti))
            .value(":no", AttributeValue::Bool(false));
        let key = ItemKey::session(family);
        if let Ok(after) = self.update(key.clone(), swap, Some(current), Some(ReturnValue::AllNew)).await? {
            let user_id = after.and_then(|a| a.optional_string("user_id")).unwrap_or_default();
            return Ok(Rotation::Rotated { user_id });
        }
        let Some(session) = self.read_item(key, Read::Consistent, None).await? else {
            return Ok(Rotation::Unknown);
        };
        if session.optional_bool("revoked").unwrap_or(true) {
            return Ok(Rotation::Revoked);
        }
        self.revoke_session(family).await?;
        Ok(Rotation::Reused)
    }

    pub async fn revoke_session(&self, family: &str) -> Result<(), StoreError> {
        let revoke = Expr::new("SET revoked = :yes").value(":yes", AttributeValue::Bool(true));
        // Refused: nothing to revoke, the family already expired.
        let _expired =
            self.update(ItemKey::session(family), revoke, Some(Expr::new(ITEM_EXISTS)), None).await?;
        Ok(())
    }

    /// Puts an access token on the deny-list until `expires_at` (its own `exp`).
    pub async fn deny_token(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        let mut item = ItemKey::denied_token(jti).into_item();
        item.extend([("entity".to_owned(), s("denied_token")), (EXPIRES_AT.to_owned(), n(expires_at))]);
        Ok(self.put(item, None).await??)
    }

    /// One small eventually-consistent read: is this access token signed out?
    pub async fn is_token_denied(&self, jti: &str, now: i64) -> Result<bool, StoreError> {
        let item = self.read_item(ItemKey::denied_token(jti), Read::Eventual, Some(EXPIRES_AT)).await?;
        // TTL deletion lags, so expiry is checked here too.
        Ok(item.and_then(|i| i.optional_number::<i64>(EXPIRES_AT)).is_some_and(|expires_at| expires_at > now))
    }
}
