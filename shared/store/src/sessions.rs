//! Sign-in sessions: each sign-in starts a refresh-token family; every refresh rotates the
//! family's one valid refresh token, and presenting an old one revokes the whole family
//! (a stolen refresh token is detected the moment either party uses it after the other).
//! Signed-out access tokens sit on a deny-list until they would have expired.

use aws_sdk_dynamodb::types::AttributeValue;

use crate::keys::{DENIED_TOKEN_SK, EXPIRES_AT, PK, SESSION_SK, SK, denied_token_pk, n, s, session_pk};
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
        self.client
            .put_item()
            .table_name(&self.table)
            .item(PK, s(session_pk(family)))
            .item(SK, s(SESSION_SK))
            .item("entity", s("session"))
            .item("user_id", s(user_id))
            .item("current_jti", s(refresh_jti))
            .item("revoked", AttributeValue::Bool(false))
            .item(EXPIRES_AT, n(expires_at))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await
            .map_err(|e| StoreError::dynamo("PutItem", e))?;
        Ok(())
    }

    /// Swaps `presented_jti` for `next_jti` if it is still the family's current token.
    pub async fn rotate_session(
        &self,
        family: &str,
        presented_jti: &str,
        next_jti: &str,
        expires_at: i64,
    ) -> Result<Rotation, StoreError> {
        let swapped = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(session_pk(family)))
            .key(SK, s(SESSION_SK))
            .update_expression("SET current_jti = :next, expires_at = :expires")
            .condition_expression("current_jti = :presented AND revoked = :no")
            .expression_attribute_values(":next", s(next_jti))
            .expression_attribute_values(":presented", s(presented_jti))
            .expression_attribute_values(":no", AttributeValue::Bool(false))
            .expression_attribute_values(":expires", n(expires_at))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match swapped {
            Ok(output) => {
                let user_id = output
                    .attributes
                    .and_then(|a| a.get("user_id").and_then(|v| v.as_s().ok()).cloned())
                    .unwrap_or_default();
                return Ok(Rotation::Rotated { user_id });
            }
            Err(error) if crate::error::condition_failed(&error) => {}
            Err(error) => return Err(StoreError::dynamo("UpdateItem", error)),
        }
        let session = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(session_pk(family)))
            .key(SK, s(SESSION_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?
            .item;
        let Some(session) = session else {
            return Ok(Rotation::Unknown);
        };
        if session.get("revoked").and_then(|v| v.as_bool().ok()).copied().unwrap_or(true) {
            return Ok(Rotation::Revoked);
        }
        self.revoke_session(family).await?;
        Ok(Rotation::Reused)
    }

    pub async fn revoke_session(&self, family: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(session_pk(family)))
            .key(SK, s(SESSION_SK))
            .update_expression("SET revoked = :yes")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Nothing to revoke: the family already expired.
            Err(error) if crate::error::condition_failed(&error) => Ok(()),
            Err(error) => Err(StoreError::dynamo("UpdateItem", error)),
        }
    }

    /// Puts an access token on the deny-list until `expires_at` (its own `exp`).
    pub async fn deny_token(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item(PK, s(denied_token_pk(jti)))
            .item(SK, s(DENIED_TOKEN_SK))
            .item("entity", s("denied_token"))
            .item(EXPIRES_AT, n(expires_at))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("PutItem", e))?;
        Ok(())
    }

    /// One small eventually-consistent read: is this access token signed out?
    pub async fn is_token_denied(&self, jti: &str, now: i64) -> Result<bool, StoreError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(denied_token_pk(jti)))
            .key(SK, s(DENIED_TOKEN_SK))
            .projection_expression(EXPIRES_AT)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?
            .item;
        // TTL deletion lags, so expiry is checked here too.
        Ok(item
            .and_then(|i| i.get(EXPIRES_AT).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<i64>().ok()))
            .is_some_and(|expires_at| expires_at > now))
    }
}
