//! Each tenant's secret: what its container needs to call the platform back (its machine
//! token) and what it may switch on (its signed license). Created at provisioning; the
//! container reads it with its task role. Writers read it, change their own field and put it
//! back whole, under the store's claim on the tenant's secret writes
//! (`Store::claim_secret_writes`), so neither loses the other's field.

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::types::Tag;
use dotmac_domain::TenantId;
use dotmac_tokens::JwtKeys;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::SecretsError;

#[derive(Debug, Clone)]
pub struct TenantSecrets {
    client: Client,
    /// Secret names are `<prefix>/<tenant id>`.
    prefix: String,
}

/// The secret's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineCredentials {
    pub tenant_id: TenantId,
    /// A bearer token: role `tenant_machine`, this tenant only.
    pub machine_token: String,
    /// The token's `jti`, to revoke it through the deny-list.
    pub token_id: String,
    pub expires_at: i64,
    /// The tenant's license (`license+jwt`, see `dotmac_tokens::LicenseClaims`); absent in
    /// secrets written before licenses existed, and until the first one is issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
}

/// Where a tenant's secret stands, as Secrets Manager reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretState {
    /// No such secret (never created, or past its recovery window).
    Absent,
    Live,
    /// Deleted, recoverable until its recovery window ends.
    ScheduledForDeletion,
}

/// The tenant's secret, and the credentials a renewal replaced (to revoke).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsuredToken {
    pub secret_arn: String,
    pub replaced: Option<MachineCredentials>,
}

impl TenantSecrets {
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        Self { client, prefix: prefix.into() }
    }

    pub fn secret_name(&self, tenant: TenantId) -> String {
        format!("{}/{tenant}", self.prefix.trim_end_matches('/'))
    }

    pub async fn read(&self, tenant: TenantId) -> Result<Option<MachineCredentials>, SecretsError> {
        let name = self.secret_name(tenant);
        match self.client.get_secret_value().secret_id(&name).send().await {
            Ok(output) => {
                let raw = output.secret_string().unwrap_or_default();
                serde_json::from_str(raw)
                    .map(Some)
                    .map_err(|e| SecretsError::Malformed { secret: name, reason: e.to_string() })
            }
            Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {
                Ok(None)
            }
            Err(error) => Err(SecretsError::aws("GetSecretValue", error)),
        }
    }

    /// Makes sure the tenant's secret holds a machine token valid for at least
    /// `renew_within_seconds` more, issuing one (`ttl_seconds`) when it does not. Safe to
    /// repeat: a retried provisioning keeps the token it made.
    pub async fn ensure_machine_token(
        &self,
        tenant: TenantId,
        keys: &JwtKeys,
        ttl_seconds: u64,
        renew_within_seconds: i64,
        now: OffsetDateTime,
    ) -> Result<EnsuredToken, SecretsError> {
        let name = self.secret_name(tenant);
        let existing = self.read(tenant).await?;
        if let Some(current) = &existing
            && current.tenant_id == tenant
            && current.expires_at - now.unix_timestamp() > renew_within_seconds
        {
            return Ok(EnsuredToken { secret_arn: self.arn(&name).await?, replaced: None });
        }
        let (token, claims) = keys.issue_machine(tenant, ttl_seconds, now)?;
        let value = serde_json::to_string(&MachineCredentials {
            tenant_id: tenant,
            machine_token: token,
            token_id: claims.jti.clone(),
            expires_at: claims.exp,
            // A renewal keeps the license beside the token.
            license: existing.as_ref().and_then(|current| current.license.clone()),
        })
        .map_err(|e| SecretsError::Malformed { secret: name.clone(), reason: e.to_string() })?;
        if existing.is_some() {
            self.client
                .put_secret_value()
                .secret_id(&name)
                .secret_string(value)
                .send()
                .await
                .map_err(|e| SecretsError::aws("PutSecretValue", e))?;
            return Ok(EnsuredToken { secret_arn: self.arn(&name).await?, replaced: existing });
        }
        let created = self
            .client
            .create_secret()
            .name(&name)
            .description(format!("DotMac tenant {tenant}: credentials of its container"))
            .secret_string(value)
            .tags(Tag::builder().key("tenant_id").value(tenant.to_string()).build())
            .send()
            .await;
        let secret_arn = match created {
            Ok(output) => output.arn().map(str::to_owned).ok_or_else(|| SecretsError::Malformed {
                secret: name,
                reason: "CreateSecret returned no ARN".into(),
            })?,
            // Another delivery of the same job created it a moment ago: theirs stands.
            Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_exists_exception()) => {
                self.arn(&name).await?
            }
            Err(error) => return Err(SecretsError::aws("CreateSecret", error)),
        };
        Ok(EnsuredToken { secret_arn, replaced: None })
    }

    /// Writes `license` into the tenant's secret beside its machine token. `false` when the
    /// tenant has no secret yet (provisioning creates it, and issues the license then).
    pub async fn write_license(&self, tenant: TenantId, license: &str) -> Result<bool, SecretsError> {
        let name = self.secret_name(tenant);
        let Some(mut credentials) = self.read(tenant).await? else { return Ok(false) };
        credentials.license = Some(license.to_owned());
        let value = serde_json::to_string(&credentials)
            .map_err(|e| SecretsError::Malformed { secret: name.clone(), reason: e.to_string() })?;
        self.client
            .put_secret_value()
            .secret_id(&name)
            .secret_string(value)
            .send()
            .await
            .map_err(|e| SecretsError::aws("PutSecretValue", e))?;
        Ok(true)
    }

    pub async fn state(&self, tenant: TenantId) -> Result<SecretState, SecretsError> {
        match self.client.describe_secret().secret_id(self.secret_name(tenant)).send().await {
            Ok(output) if output.deleted_date().is_some() => Ok(SecretState::ScheduledForDeletion),
            Ok(_) => Ok(SecretState::Live),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {
                Ok(SecretState::Absent)
            }
            Err(error) => Err(SecretsError::aws("DescribeSecret", error)),
        }
    }

    /// Deletes the tenant's secret, recoverable for `recovery_days` (7 to 30): a deletion
    /// done by mistake can be undone (`RestoreSecret`) within that window. Safe to repeat:
    /// a secret already scheduled for deletion, or gone, is left as it is.
    pub async fn delete(&self, tenant: TenantId, recovery_days: i64) -> Result<SecretState, SecretsError> {
        match self.state(tenant).await? {
            SecretState::Live => {}
            settled => return Ok(settled),
        }
        self.client
            .delete_secret()
            .secret_id(self.secret_name(tenant))
            .recovery_window_in_days(recovery_days)
            .send()
            .await
            .map_err(|e| SecretsError::aws("DeleteSecret", e))?;
        Ok(SecretState::ScheduledForDeletion)
    }

    async fn arn(&self, name: &str) -> Result<String, SecretsError> {
        let output = self
            .client
            .describe_secret()
            .secret_id(name)
            .send()
            .await
            .map_err(|e| SecretsError::aws("DescribeSecret", e))?;
        output.arn().map(str::to_owned).ok_or_else(|| SecretsError::Missing(name.to_owned()))
    }
}
