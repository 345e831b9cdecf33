//! The partner use cases: create, read and change a partner (platform staff; a partner's
//! own staff read theirs), and a partner's commissions of a month (its statement). The
//! ledger itself is written by the store in the transactions that pay and refund invoices
//! (`dotmac_store::partners`); nothing here writes an entry.

use std::collections::BTreeMap;

use dotmac_billing::{CommissionRate, CommissionRates, Period};
use dotmac_domain::{
    Action, Caller, Denied, Email, InvalidValue, PartnerId, Resource, Target, TenantName, authorize,
};
use dotmac_store::{CommissionEntry, PartnerRecord, Store, StoreError};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum PartnersError {
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("no partner {0} where the caller can see")]
    NotFound(String),
    #[error("a partner {0} exists already")]
    Exists(String),
    #[error("the partner changed since version {0}")]
    VersionConflict(u64),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for PartnersError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::VersionConflict { expected } => PartnersError::VersionConflict(expected),
            other => PartnersError::Store(other),
        }
    }
}

/// What creating a partner takes, already parsed.
#[derive(Debug, Clone)]
pub struct NewPartner {
    pub id: PartnerId,
    pub name: TenantName,
    pub contact_email: Email,
    pub rates: CommissionRates,
}

/// A change of a partner: each field replaces the stored one when given.
#[derive(Debug, Clone, Default)]
pub struct PartnerChanges {
    pub name: Option<TenantName>,
    pub contact_email: Option<Email>,
    pub commission_rate: Option<CommissionRate>,
    pub plan_rates: Option<BTreeMap<String, CommissionRate>>,
    /// The version the change was made against, when the caller names one.
    pub version: Option<u64>,
}

/// A partner's month: its entries and their totals.
#[derive(Debug, Clone)]
pub struct Statement {
    pub partner: PartnerId,
    pub period: Period,
    pub entries: Vec<CommissionEntry>,
}

/// Parses a rate field (`field` names it in the refusal).
pub fn parse_rate(raw: &str, field: &'static str) -> Result<CommissionRate, InvalidValue> {
    CommissionRate::parse(raw).map_err(|e| InvalidValue::new(field, e.to_string()))
}

/// Who may touch partner `id` with `action`: platform staff any; its own staff read it.
fn allowed(caller: &Caller, resource: Resource, action: Action, id: &PartnerId) -> Result<(), PartnersError> {
    match authorize(caller, resource, action, Target::default().partner(Some(id))) {
        Ok(()) => Ok(()),
        // Another partner's staff learn nothing of a partner that is not theirs: a 404, as
        // for another partner's tenant. Everyone else is simply refused.
        Err(_) if caller.partner_id.is_some() && action == Action::Read => {
            Err(PartnersError::NotFound(id.to_string()))
        }
        Err(denied) => Err(denied.into()),
    }
}

#[derive(Debug, Clone)]
pub struct Partners {
    pub store: Store,
}

impl Partners {
    pub async fn create(
        &self,
        caller: &Caller,
        new: NewPartner,
        now: OffsetDateTime,
    ) -> Result<PartnerRecord, PartnersError> {
        if !caller.has_global_scope() {
            return Err(Denied { resource: Resource::Partner, action: Action::Create }.into());
        }
        let record = PartnerRecord {
            id: new.id.clone(),
            name: new.name,
            contact_email: new.contact_email,
            rates: new.rates,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        match self.store.create_partner(&record).await {
            Ok(()) => Ok(record),
            Err(StoreError::AlreadyExists) => Err(PartnersError::Exists(new.id.to_string())),
            Err(error) => Err(error.into()),
        }
    }

    pub async fn get(&self, caller: &Caller, id: &PartnerId) -> Result<PartnerRecord, PartnersError> {
        allowed(caller, Resource::Partner, Action::Read, id)?;
        self.store
            .fenced(caller.fence())
            .get_partner(id)
            .await?
            .ok_or_else(|| PartnersError::NotFound(id.to_string()))
    }

    pub async fn update(
        &self,
        caller: &Caller,
        id: &PartnerId,
        changes: PartnerChanges,
        now: OffsetDateTime,
    ) -> Result<PartnerRecord, PartnersError> {
        if !caller.has_global_scope() {
            return Err(Denied { resource: Resource::Partner, action: Action::Update }.into());
        }
        let mut partner =
            self.store.get_partner(id).await?.ok_or_else(|| PartnersError::NotFound(id.to_string()))?;
        if let Some(version) = changes.version.filter(|v| *v != partner.version) {
            return Err(PartnersError::VersionConflict(version));
        }
        if let Some(name) = changes.name {
            partner.name = name;
        }
        if let Some(email) = changes.contact_email {
            partner.contact_email = email;
        }
        if let Some(rate) = changes.commission_rate {
            partner.rates.default = rate;
        }
        if let Some(plan_rates) = changes.plan_rates {
            partner.rates.per_plan = plan_rates;
        }
        partner.updated_at = now;
        partner.version += 1;
        self.store.save_partner(&partner).await?;
        Ok(partner)
    }

    /// The partner's entries booked in `period` (its monthly statement).
    pub async fn statement(
        &self,
        caller: &Caller,
        id: &PartnerId,
        period: Period,
    ) -> Result<Statement, PartnersError> {
        allowed(caller, Resource::Commission, Action::Read, id)?;
        let fenced = self.store.fenced(caller.fence());
        if fenced.get_partner(id).await?.is_none() {
            return Err(PartnersError::NotFound(id.to_string()));
        }
        let entries = fenced.commissions(id, period).await?;
        Ok(Statement { partner: id.clone(), period, entries })
    }
}
