//! The JWT key set in Secrets Manager: `{"keys":[{"private_key","not_before","retire_at"}]}`
//! (see `dotmac_tokens::KeySet`). Every function reads it; only the rotation schedule
//! writes it.

use aws_sdk_secretsmanager::Client;
use dotmac_tokens::JwtKeys;
use dotmac_tokens::{KeySet, StoredKey, generate_signing_key};
use std::sync::Arc;
use std::time::Duration;

use crate::SecretsError;

#[derive(Debug, Clone)]
pub struct KeySetSecret {
    client: Client,
    secret_id: String,
}

/// How keys rotate. `publish_lead` lets every instance reload the new key before it signs;
/// `overlap` keeps the old key verifying for the longest token lifetime; `rotate_after` is
/// the age at which the signing key is replaced (the schedule may fire more often: a rotation
/// that is not due yet is skipped, which also makes duplicate deliveries harmless).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    pub publish_lead_seconds: i64,
    pub overlap_seconds: i64,
    pub rotate_after_seconds: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RotationOutcome {
    Rotated { keys: usize, signs_from: i64 },
    NotDue { newest_key_since: i64 },
}

impl KeySetSecret {
    pub fn new(client: Client, secret_id: impl Into<String>) -> Self {
        Self { client, secret_id: secret_id.into() }
    }

    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }

    /// The current key set and the secret version it came from.
    pub async fn load(&self) -> Result<(KeySet, String), SecretsError> {
        let (raw, version) =
            self.fetch().await?.ok_or_else(|| SecretsError::Missing(self.secret_id.clone()))?;
        let set = serde_json::from_str(&raw)
            .map_err(|e| SecretsError::Malformed { secret: self.secret_id.clone(), reason: e.to_string() })?;
        Ok((set, version))
    }

    /// The secret's current value and version, `None` when it does not exist (or has no
    /// value yet).
    async fn fetch(&self) -> Result<Option<(String, String)>, SecretsError> {
        match self.client.get_secret_value().secret_id(&self.secret_id).send().await {
            Ok(output) => Ok(Some((
                output.secret_string().unwrap_or_default().to_owned(),
                output.version_id().unwrap_or_default().to_owned(),
            ))),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {
                Ok(None)
            }
            Err(error) => Err(SecretsError::aws("GetSecretValue", error)),
        }
    }

    /// Creates the secret with `initial` unless it exists (then it is left alone): what the
    /// local stack's bootstrap does; in AWS the stack creates it and the deploy-time rotation
    /// (a custom resource) fills it.
    pub async fn ensure(&self, initial: &KeySet) -> Result<(), SecretsError> {
        self.create(initial).await.map(|_| ())
    }

    /// Creates the secret with `value`; `false` when it already existed (left alone).
    async fn create(&self, initial: &KeySet) -> Result<bool, SecretsError> {
        let value = serde_json::to_string(initial)
            .map_err(|e| SecretsError::Malformed { secret: self.secret_id.clone(), reason: e.to_string() })?;
        match self
            .client
            .create_secret()
            .name(&self.secret_id)
            .description("DotMac Platform JWT signing keys (rotated by schedule)")
            .secret_string(value)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_exists_exception()) => {
                Ok(false)
            }
            Err(error) => Err(SecretsError::aws("CreateSecret", error)),
        }
    }

    /// Writes `set` as the secret's new value. For the public copy, which is derived: writing
    /// the same content twice is harmless.
    pub async fn write(&self, set: &KeySet) -> Result<(), SecretsError> {
        self.put_or_create(set, None).await
    }

    /// PutSecretValue, and CreateSecret only when the secret itself does not exist: deployed,
    /// the stack creates both secrets, so the functions never need (nor hold) CreateSecret.
    async fn put_or_create(&self, set: &KeySet, token: Option<String>) -> Result<(), SecretsError> {
        let value = serde_json::to_string(set)
            .map_err(|e| SecretsError::Malformed { secret: self.secret_id.clone(), reason: e.to_string() })?;
        let put = self
            .client
            .put_secret_value()
            .secret_id(&self.secret_id)
            .secret_string(&value)
            .set_client_request_token(token.clone())
            .send()
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {
                if self.create(set).await? {
                    return Ok(());
                }
                // Created by someone else in between: write over it like any other version.
                self.client
                    .put_secret_value()
                    .secret_id(&self.secret_id)
                    .secret_string(value)
                    .set_client_request_token(token)
                    .send()
                    .await
                    .map_err(|e| SecretsError::aws("PutSecretValue", e))?;
                Ok(())
            }
            Err(error) => Err(SecretsError::aws("PutSecretValue", error)),
        }
    }

    /// Adds a new signing key when the newest one is old enough (or there is none), retiring
    /// the old ones after the overlap. The write names the version it replaces, so two
    /// concurrent runs cannot both add a key. `public`, when given, gets the set's public half
    /// first, so verifiers never lag the signers.
    pub async fn rotate(
        &self,
        now: i64,
        policy: RotationPolicy,
        public: Option<&KeySetSecret>,
    ) -> Result<RotationOutcome, SecretsError> {
        let current = self.fetch().await?;
        let set = match &current {
            Some((raw, _)) => serde_json::from_str::<KeySet>(raw).ok().filter(|set| !set.keys.is_empty()),
            None => None,
        };
        if current.is_some() && set.is_none() {
            // A secret created empty (as the template does) or holding something else.
            tracing::warn!(secret = %self.secret_id, "the key set secret holds no keys; starting a new set");
        }
        if let Some(since) = set.as_ref().and_then(KeySet::newest_not_before)
            && now - since < policy.rotate_after_seconds
        {
            return Ok(RotationOutcome::NotDue { newest_key_since: since });
        }
        let (rotated, lead) = match set {
            Some(set) => (
                set.rotate(generate_signing_key()?, now, policy.publish_lead_seconds, policy.overlap_seconds),
                policy.publish_lead_seconds,
            ),
            // A new set: one key that signs at once (nobody can be using another yet) and the
            // next one already published, so two keys are live from the start.
            None => (
                KeySet {
                    keys: vec![
                        StoredKey::private(generate_signing_key()?, now),
                        StoredKey::private(generate_signing_key()?, now + policy.rotate_after_seconds),
                    ],
                },
                0,
            ),
        };
        if let Some(public) = public {
            public.write(&rotated.public()?).await?;
        }
        // Secrets Manager refuses a second, different version under the same token, so two
        // runs that read the same version cannot both add a key. The token becomes the new
        // version's id, so it is a digest of the version it replaces: the version itself would
        // grow past the 64 characters a token may have by the second rotation. A secret created
        // bare, or empty as the template creates it, is written like any other; only a missing
        // one is created.
        let version = current.as_ref().map(|(_, version)| version.as_str()).unwrap_or("none");
        self.put_or_create(&rotated, Some(rotation_token(version))).await?;
        let signs_from = now + lead;
        tracing::info!(secret = %self.secret_id, keys = rotated.keys.len(), signs_from, "signing keys rotated");
        Ok(RotationOutcome::Rotated { keys: rotated.keys.len(), signs_from })
    }

    /// Loads the key set and swaps it into `keys` (which keep their use: a verifier stays one).
    pub async fn reload_into(&self, keys: &JwtKeys) -> Result<(), SecretsError> {
        let (set, _) = self.load().await?;
        keys.reload(&set, time::OffsetDateTime::now_utc().unix_timestamp())?;
        Ok(())
    }
}

/// The request token of the rotation that replaces `version`: 36 characters, the same for
/// every run that read that version (the same binary: `DefaultHasher::new` is fixed), a
/// different one for every other version.
fn rotation_token(version: &str) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let digest = |salt: u8| {
        let mut hasher = DefaultHasher::new();
        (salt, version).hash(&mut hasher);
        hasher.finish()
    };
    format!("rot-{:016x}{:016x}", digest(1), digest(2))
}

/// Reloads the key set every `every`, so rotations and retirements reach running instances
/// (on Lambda the timer runs while the instance is handling requests). A failed reload keeps
/// the current keys and is retried at the next tick.
pub fn spawn_reload(
    keys: Arc<JwtKeys>,
    secret: KeySetSecret,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            if let Err(error) = secret.reload_into(&keys).await {
                tracing::warn!(%error, secret = %secret.secret_id(), "key set reload failed; keeping the current keys");
            }
        }
    })
}
