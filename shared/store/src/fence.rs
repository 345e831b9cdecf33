//! The store as one caller sees it: every key it reads or writes must lead with the caller's
//! tenant (or partner), unless the caller has global scope. Handlers reach tenant data only
//! through this view, so a missed policy check still cannot cross tenants.

use dotmac_domain::{Fence, RoleName, Tenant, TenantId};

use crate::invitations::{Delivery, InvitationRecord};
use crate::keys::tenant_pk;
use crate::roles::{RoleRecord, RoleWrite};
use crate::tenants::Page;
use crate::users::{UserChanges, UserHome, UserRecord};
use crate::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct Fenced<'a> {
    store: &'a Store,
    fence: Fence,
}

impl Store {
    pub fn fenced(&self, fence: Fence) -> Fenced<'_> {
        Fenced { store: self, fence }
    }
}

/// Whether `fence` lets a caller touch the partition `pk`.
pub fn admits(fence: &Fence, pk: &str) -> bool {
    let within = |home: &str| pk == home || pk.strip_prefix(home).is_some_and(|rest| rest.starts_with('#'));
    match fence {
        Fence::Global => true,
        Fence::Tenant(tenant) => within(&tenant_pk(*tenant)),
        Fence::Partner(partner) => within(&crate::keys::partner_pk(partner)),
        Fence::Nothing => false,
    }
}

impl Fenced<'_> {
    fn admit(&self, pk: &str) -> Result<(), StoreError> {
        if admits(&self.fence, pk) {
            Ok(())
        } else {
            tracing::error!(fence = ?self.fence, key = pk, "store access outside the caller's fence refused");
            Err(StoreError::OutOfFence { key: pk.to_owned() })
        }
    }

    pub(crate) fn fence(&self) -> &Fence {
        &self.fence
    }

    pub(crate) fn store(&self) -> &Store {
        self.store
    }

    /// Whether a tenant read without its key being checked (a partner's) is one this fence
    /// may see.
    pub(crate) fn may_see(&self, tenant: &Tenant) -> bool {
        !matches!(self.fence, Fence::Partner(_)) || self.partner_brought(tenant)
    }

    fn partner_brought(&self, tenant: &Tenant) -> bool {
        matches!(&self.fence, Fence::Partner(partner) if tenant.partner_id.as_ref() == Some(partner))
    }

    pub async fn get_tenant(&self, id: TenantId) -> Result<Option<Tenant>, StoreError> {
        if matches!(self.fence, Fence::Partner(_)) {
            // A partner's tenants are found by what they record, not by their key.
            return match self.store.get_tenant(id).await? {
                // Another partner's tenant is, to this partner, no tenant at all.
                Some(tenant) if self.partner_brought(&tenant) => Ok(Some(tenant)),
                _ => Ok(None),
            };
        }
        self.admit(&tenant_pk(id))?;
        self.store.get_tenant(id).await
    }

    pub async fn list_tenants(&self, limit: i32, cursor: Option<&str>) -> Result<Page<Tenant>, StoreError> {
        match &self.fence {
            Fence::Global => self.store.list_tenants(limit, cursor).await,
            Fence::Partner(partner) => self.store.list_partner_tenants(partner, limit, cursor).await,
            Fence::Tenant(_) | Fence::Nothing => Err(StoreError::OutOfFence { key: "TENANTS".to_owned() }),
        }
    }

    /// A page of a tenant's event log (see `Store::tenant_events`).
    /// `tenant` is the tenant as read: a partner's fence is checked on what it records.
    pub async fn tenant_events(
        &self,
        tenant: &Tenant,
        order: crate::EventOrder,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<dotmac_domain::EventEnvelope>, StoreError> {
        if !matches!(self.fence, Fence::Partner(_)) {
            self.admit(&tenant_pk(tenant.id))?;
        } else if !self.partner_brought(tenant) {
            return Err(StoreError::OutOfFence { key: tenant_pk(tenant.id) });
        }
        self.store.tenant_events(tenant.id, order, limit, cursor).await
    }

    pub async fn create_tenant(&self, tenant: &Tenant, request: Option<&str>) -> Result<(), StoreError> {
        if !(self.fence == Fence::Global || self.partner_brought(tenant)) {
            return Err(StoreError::OutOfFence { key: tenant_pk(tenant.id) });
        }
        self.store.create_tenant_for(tenant, request).await
    }

    pub async fn get_user(&self, home: &UserHome, id: &str) -> Result<Option<UserRecord>, StoreError> {
        self.admit(&home.pk())?;
        self.store.get_user(home, id).await
    }

    pub async fn list_users(
        &self,
        home: &UserHome,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<UserRecord>, StoreError> {
        self.admit(&home.pk())?;
        self.store.list_users(home, limit, cursor).await
    }

    pub async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.admit(&user.home().pk())?;
        self.store.create_user(user).await
    }

    pub async fn update_user(
        &self,
        home: &UserHome,
        id: &str,
        changes: &UserChanges,
        now_ms: i64,
    ) -> Result<Option<UserRecord>, StoreError> {
        self.admit(&home.pk())?;
        self.store.update_user(home, id, changes, now_ms).await
    }

    pub async fn delete_user(&self, user: &UserRecord) -> Result<bool, StoreError> {
        self.admit(&user.home().pk())?;
        self.store.delete_user(user).await
    }

    pub async fn create_invitation(&self, invitation: &InvitationRecord) -> Result<(), StoreError> {
        self.admit(&invitation.home().pk())?;
        self.store.create_invitation(invitation).await
    }

    pub async fn get_invitation(
        &self,
        home: &UserHome,
        id: &str,
    ) -> Result<Option<InvitationRecord>, StoreError> {
        self.admit(&home.pk())?;
        self.store.get_invitation(home, id).await
    }

    pub async fn list_invitations(
        &self,
        home: &UserHome,
        limit: i32,
        cursor: Option<&str>,
        now: time::OffsetDateTime,
    ) -> Result<Page<InvitationRecord>, StoreError> {
        self.admit(&home.pk())?;
        self.store.list_invitations(home, limit, cursor, now).await
    }

    pub async fn set_invitation_delivery(
        &self,
        invitation: &InvitationRecord,
        delivery: Delivery,
    ) -> Result<(), StoreError> {
        self.admit(&invitation.home().pk())?;
        self.store.set_invitation_delivery(invitation, delivery).await
    }

    pub async fn reissue_invitation(
        &self,
        invitation: &InvitationRecord,
        token_digest: &str,
        expires_at: i64,
    ) -> Result<Option<InvitationRecord>, StoreError> {
        self.admit(&invitation.home().pk())?;
        self.store.reissue_invitation(invitation, token_digest, expires_at).await
    }

    pub async fn revoke_invitation(&self, invitation: &InvitationRecord) -> Result<bool, StoreError> {
        self.admit(&invitation.home().pk())?;
        self.store.revoke_invitation(invitation).await
    }

    pub async fn get_role(
        &self,
        tenant: TenantId,
        name: &RoleName,
    ) -> Result<Option<RoleRecord>, StoreError> {
        self.admit(&tenant_pk(tenant))?;
        self.store.get_role(tenant, name).await
    }

    pub async fn list_roles(&self, tenant: TenantId) -> Result<Vec<RoleRecord>, StoreError> {
        self.admit(&tenant_pk(tenant))?;
        self.store.list_roles(tenant).await
    }

    pub async fn put_role(&self, record: &RoleRecord, mode: RoleWrite) -> Result<bool, StoreError> {
        self.admit(&tenant_pk(record.tenant_id))?;
        self.store.put_role(record, mode).await
    }

    pub async fn delete_role(
        &self,
        tenant: TenantId,
        name: &RoleName,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.admit(&tenant_pk(tenant))?;
        self.store.delete_role(tenant, name, now_ms).await
    }

    pub async fn record_usage(
        &self,
        report: &crate::usage::UsageReport,
    ) -> Result<crate::usage::Recorded, StoreError> {
        self.admit(&tenant_pk(report.tenant_id))?;
        self.store.record_usage(report).await
    }

    /// `tenant` as the caller read it (through this fence): a partner's reach is decided by
    /// what the tenant records, so no second read is needed to check it.
    pub async fn usage_between(
        &self,
        tenant: &Tenant,
        from: time::OffsetDateTime,
        to: time::OffsetDateTime,
    ) -> Result<crate::usage::UsageWindow, StoreError> {
        if matches!(self.fence, Fence::Partner(_)) {
            if !self.partner_brought(tenant) {
                return Err(StoreError::OutOfFence { key: tenant_pk(tenant.id) });
            }
        } else {
            self.admit(&tenant_pk(tenant.id))?;
        }
        self.store.usage_between(tenant.id, from, to).await
    }

    pub async fn latest_heartbeat(
        &self,
        tenant: TenantId,
    ) -> Result<Option<crate::heartbeats::Heartbeat>, StoreError> {
        self.admit(&tenant_pk(tenant))?;
        self.store.latest_heartbeat(tenant).await
    }

    pub async fn record_heartbeat(
        &self,
        tenant: TenantId,
        heartbeat: &crate::heartbeats::Heartbeat,
    ) -> Result<(), StoreError> {
        self.admit(&tenant_pk(tenant))?;
        self.store.record_heartbeat(tenant, heartbeat).await
    }

    pub async fn create_backup(
        &self,
        record: &crate::backups::BackupRecord,
    ) -> Result<(crate::backups::BackupRecord, bool), StoreError> {
        self.admit(&tenant_pk(record.tenant_id))?;
        self.store.create_backup(record).await
    }

    pub async fn get_backup(
        &self,
        tenant: TenantId,
        id: &dotmac_domain::BackupId,
    ) -> Result<Option<crate::backups::BackupRecord>, StoreError> {
        self.admit(&tenant_pk(tenant))?;
        self.store.get_backup(tenant, id).await
    }

    pub async fn list_backups(
        &self,
        tenant: TenantId,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<crate::backups::BackupRecord>, StoreError> {
        self.admit(&tenant_pk(tenant))?;
        self.store.list_backups(tenant, limit, cursor).await
    }

    pub async fn create_restore(
        &self,
        record: &crate::backups::RestoreRecord,
    ) -> Result<crate::backups::RestoreRecord, StoreError> {
        self.admit(&tenant_pk(record.tenant_id))?;
        self.store.create_restore(record).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dotmac_domain::PartnerId;

    #[test]
    fn a_tenant_fence_admits_only_its_own_partition() {
        let mine = TenantId::generate();
        let fence = Fence::Tenant(mine);
        assert!(admits(&fence, &tenant_pk(mine)));
        assert!(admits(&fence, &format!("{}#INVOICES", tenant_pk(mine))));
        assert!(!admits(&fence, &tenant_pk(TenantId::generate())));
        assert!(!admits(&fence, &format!("{}0", tenant_pk(mine))));
        assert!(!admits(&fence, "PLATFORM"));
        assert!(!admits(&fence, "PARTNER#acme"));
        assert!(!admits(&Fence::Nothing, &tenant_pk(mine)));
        assert!(admits(&Fence::Global, "PLATFORM"));
        let acme = PartnerId::parse("acme").expect("id");
        assert!(admits(&Fence::Partner(acme.clone()), "PARTNER#acme"));
        assert!(!admits(&Fence::Partner(acme), "PARTNER#acme-two"));
    }
}
