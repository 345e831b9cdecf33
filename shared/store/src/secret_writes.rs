//! A short claim on writing a tenant's secret. Secrets Manager has no conditional write, and
//! the secret holds two things written by different jobs (the machine token at provisioning,
//! the license whenever bundles or plan change): each writer reads the secret, changes its
//! own field and puts it back, so two writers at once could lose one's change. Whoever holds
//! this claim is the only writer; it expires, so a crashed writer never blocks the tenant.

use dotmac_domain::TenantId;
use time::OffsetDateTime;

use crate::dynamo::Expr;
use crate::keys::{ItemKey, n, s, tenant_pk};
use crate::{Store, StoreError};

pub(crate) const SECRET_WRITES_SK: &str = "SECRET_WRITES";

impl Store {
    /// Claims the tenant's secret for `seconds` under `token`; `false` when someone else
    /// holds a live claim.
    pub async fn claim_secret_writes(
        &self,
        tenant: TenantId,
        token: &str,
        seconds: i64,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut item = ItemKey::from_parts(tenant_pk(tenant), SECRET_WRITES_SK).into_item();
        item.insert("entity".into(), s("secret_writes"));
        item.insert("token".into(), s(token));
        item.insert("expires_at".into(), n(now.unix_timestamp() + seconds));
        let free =
            Expr::new("attribute_not_exists(PK) OR expires_at < :now").value(":now", n(now.unix_timestamp()));
        Ok(self.put(item, Some(free)).await?.is_ok())
    }

    /// Gives the claim up, if it is still `token`'s.
    pub async fn release_secret_writes(&self, tenant: TenantId, token: &str) -> Result<(), StoreError> {
        let ours = Expr::new("#token = :token").name("#token", "token").value(":token", s(token));
        let key = ItemKey::from_parts(tenant_pk(tenant), SECRET_WRITES_SK);
        // Refused: it expired and another writer holds it now, which is theirs to release.
        let _ = self.delete(key, Some(ours)).await?;
        Ok(())
    }
}
