//! Idempotency keys: the first request with a key saves its response; a retry with the same
//! key and the same body gets that response back instead of doing the work again.

use time::OffsetDateTime;

use crate::dynamo::{Attributes, Expr, Read};
use crate::keys::{EXPIRES_AT, ItemKey, n, s};
use crate::{Store, StoreError};

/// How long a saved response is replayed.
pub const KEY_LIFETIME_SECONDS: i64 = 24 * 3600;
/// A request that started but never finished (its process died) frees its key after this.
pub const IN_PROGRESS_LOCK_SECONDS: i64 = 60;
/// The `state` of a record whose request is still running.
const IN_PROGRESS: &str = "in_progress";

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

impl Claim {
    /// The condition that the record is still this claim's.
    fn holds_key(&self) -> Expr {
        Expr::new("#owner = :owner").name("#owner", "owner").value(":owner", s(&self.0))
    }
}

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

fn key(scope: &str, key: &IdempotencyKey) -> ItemKey {
    ItemKey::idempotency(scope, key.as_str())
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
        let claim = Claim(uuid::Uuid::new_v4().to_string());
        let mut item = key(scope, idempotency_key).into_item();
        item.extend([
            ("entity".to_owned(), s("idempotency")),
            ("state".to_owned(), s(IN_PROGRESS)),
            ("fingerprint".to_owned(), s(fingerprint)),
            ("locked_until".to_owned(), n(now_s + IN_PROGRESS_LOCK_SECONDS)),
            ("owner".to_owned(), s(&claim.0)),
            (EXPIRES_AT.to_owned(), n(now_s + KEY_LIFETIME_SECONDS)),
        ]);
        // TTL deletion lags (and emulators never run it), so expiry is also checked here.
        let free = Expr::new(
            "attribute_not_exists(PK) OR expires_at < :now OR (#state = :in_progress AND locked_until < :now AND fingerprint = :fp)",
        )
        .name("#state", "state")
        .value(":now", n(now_s))
        .value(":in_progress", s(IN_PROGRESS))
        .value(":fp", s(fingerprint));
        if self.put(item, Some(free)).await?.is_ok() {
            return Ok(Begin::Started(claim));
        }
        let existing =
            self.read_item(key(scope, idempotency_key), Read::Consistent, None).await?.unwrap_or_default();
        if existing.optional_string("fingerprint").as_deref() != Some(fingerprint) {
            return Ok(Begin::Mismatch);
        }
        if existing.optional_string("state").as_deref() != Some("completed") {
            return Ok(Begin::InProgress);
        }
        let status = existing.number("status")?;
        Ok(Begin::Replay(SavedResponse {
            status,
            body: existing.optional_string("body").unwrap_or_default(),
        }))
    }

    /// Saves the response the key's retries will get.
    pub async fn complete_idempotent(
        &self,
        scope: &str,
        idempotency_key: &IdempotencyKey,
        claim: &Claim,
        response: &SavedResponse,
    ) -> Result<(), StoreError> {
        let save = Expr::new("SET #state = :completed, #status = :status, body = :body REMOVE locked_until")
            .name("#state", "state")
            .name("#status", "status")
            .value(":completed", s("completed"))
            .value(":status", n(response.status.into()))
            .value(":body", s(&response.body));
        self.update(key(scope, idempotency_key), save, Some(claim.holds_key()), None).await??;
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
        let ours_in_progress = claim
            .holds_key()
            .and("#state = :in_progress")
            .name("#state", "state")
            .value(":in_progress", s(IN_PROGRESS));
        // Refused: the key is no longer ours, and stays.
        let _taken_over = self.delete(key(scope, idempotency_key), Some(ours_in_progress)).await?;
        Ok(())
    }
}
