//! Idempotency keys: the first request with a key saves its response; a retry with the same
//! key and the same body gets that response back instead of doing the work again.

use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;
use time::OffsetDateTime;

use crate::keys::{EXPIRES_AT, IDEMPOTENCY_SK, PK, SK, idempotency_pk, n};
use crate::{Store, StoreError};

/// How long a saved response is replayed.
pub const KEY_LIFETIME_SECONDS: i64 = 24 * 3600;
/// A request that started but never finished (its process died) frees its key after this.
pub const IN_PROGRESS_LOCK_SECONDS: i64 = 60;

/// A client-chosen key: 1–255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, dotmac_domain::InvalidValue> {
        let key = raw.trim();
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(dotmac_domain::InvalidValue::new(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            ));
        }
        Ok(Self(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedResponse {
    pub status: u16,
    pub body: String,
}

/// Proof that this request holds the key: only the holder may save its response or free it,
/// so a request whose lock was taken over cannot overwrite or delete the new holder's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim(String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First use of the key: do the work, then `complete_idempotent` (or
    /// `abandon_idempotent`) with this claim.
    Started(Claim),
    /// The key's first request finished: answer with its response.
    Replay(SavedResponse),
    /// The key's first request is still running.
    InProgress,
    /// The key was used with a different request body.
    Mismatch,
}

fn key(scope: &str, key: &IdempotencyKey) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(idempotency_pk(scope, key.as_str()))),
        (SK.to_owned(), AttributeValue::S(IDEMPOTENCY_SK.to_owned())),
    ])
}

impl Store {
    /// Claims `key` within `scope` (the caller) for a request whose body hashes to
    /// `fingerprint`.
    pub async fn begin_idempotent(
        &self,
        scope: &str,
        idempotency_key: &IdempotencyKey,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Result<Begin, StoreError> {
        let now_s = now.unix_timestamp();
        let mut item = key(scope, idempotency_key);
        item.insert("entity".into(), AttributeValue::S("idempotency".into()));
        item.insert("state".into(), AttributeValue::S("in_progress".into()));
        item.insert("fingerprint".into(), AttributeValue::S(fingerprint.to_owned()));
        item.insert("locked_until".into(), n(now_s + IN_PROGRESS_LOCK_SECONDS));
        let claim = Claim(uuid::Uuid::new_v4().to_string());
        item.insert("owner".into(), AttributeValue::S(claim.0.clone()));
        item.insert(EXPIRES_AT.into(), n(now_s + KEY_LIFETIME_SECONDS));
        // TTL deletion lags (and emulators never run it), so expiry is also checked here.
        let claimed = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(
                "attribute_not_exists(PK) OR expires_at < :now OR (#state = :in_progress AND locked_until < :now AND fingerprint = :fp)",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":now", n(now_s))
            .expression_attribute_values(":in_progress", AttributeValue::S("in_progress".into()))
            .expression_attribute_values(":fp", AttributeValue::S(fingerprint.to_owned()))
            .send()
            .await;
        match claimed {
            Ok(_) => return Ok(Begin::Started(claim)),
            Err(error) if crate::error::condition_failed(&error) => {}
            Err(error) => return Err(StoreError::dynamo("PutItem", error)),
        }
        let existing = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(scope, idempotency_key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?
            .item
            .unwrap_or_default();
        let text = |name: &str| existing.get(name).and_then(|v| v.as_s().ok()).cloned();
        if text("fingerprint").as_deref() != Some(fingerprint) {
            return Ok(Begin::Mismatch);
        }
        if text("state").as_deref() != Some("completed") {
            return Ok(Begin::InProgress);
        }
        let status = existing
            .get("status")
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| StoreError::Corrupt("idempotency record without status".into()))?;
        Ok(Begin::Replay(SavedResponse { status, body: text("body").unwrap_or_default() }))
    }

    /// Saves the response the key's retries will get.
    pub async fn complete_idempotent(
        &self,
        scope: &str,
        idempotency_key: &IdempotencyKey,
        claim: &Claim,
        response: &SavedResponse,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(scope, idempotency_key)))
            .update_expression("SET #state = :completed, #status = :status, body = :body REMOVE locked_until")
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", AttributeValue::S(claim.0.clone()))
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":completed", AttributeValue::S("completed".into()))
            .expression_attribute_values(":status", AttributeValue::N(response.status.to_string()))
            .expression_attribute_values(":body", AttributeValue::S(response.body.clone()))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("UpdateItem", e))?;
        Ok(())
    }

    /// Frees the key after a failed request, so a retry does the work. A key that is no
    /// longer ours (its lock was taken over) is left alone.
    pub async fn abandon_idempotent(
        &self,
        scope: &str,
        idempotency_key: &IdempotencyKey,
        claim: &Claim,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(scope, idempotency_key)))
            .condition_expression("#owner = :owner AND #state = :in_progress")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":owner", AttributeValue::S(claim.0.clone()))
            .expression_attribute_values(":in_progress", AttributeValue::S("in_progress".into()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if crate::error::condition_failed(&error) => Ok(()),
            Err(error) => Err(StoreError::dynamo("DeleteItem", error)),
        }
    }
}
