//! DynamoDB persistence for the platform's single table.
//!
//! Every tenant-owned item's key (its profile, users, invitations, roles, health) leads with
//! `TENANT#<id>`, and handlers reach them through `Store::fenced`, which refuses keys outside
//! the caller's tenant. Platform-level items (plans, slug claims, e-mail claims, invitation
//! tokens, platform staff, idempotency records) have their own prefixes.

pub mod admission;
pub mod backups;
pub mod billing;
pub mod catalog;
pub mod dunning;
mod dynamo;
mod error;
pub mod events;
pub mod fence;
pub mod heartbeats;
pub mod idempotency;
pub mod invitations;
pub mod item_json;
pub mod keys;
pub mod partners;
pub mod payments;
pub mod plans;
pub mod roles;
pub mod rollouts;
pub mod schema;
mod secret_writes;
pub mod sessions;
pub mod subscriptions;
pub mod tenants;
pub mod throttle;
pub mod usage;
pub mod users;

pub use admission::{Admission, Also, Presented, SessionOf};
pub use backups::{
    BackupKeys, BackupRecord, BackupStatus, BackupTrigger, RestoreRecord, RestoreStatus, survives_restore,
};
pub use billing::{
    BillingRun, Expected, Finalized, InvoiceContext, InvoiceFilter, InvoiceRecord, InvoiceStatus, Opened,
    OutboxEvent, RunOutcome, RunTenant, Written, invoice_id, parse_invoice_id,
};
pub use catalog::{PriceVersion, PriceWrite};
pub use dunning::{Dunning, DunningDue, DunningEntry, DunningStatus, DunningWrite};
pub use error::StoreError;
pub use events::EventOrder;
pub use fence::Fenced;
pub use heartbeats::{HealthStatus, Heartbeat};
pub use idempotency::{Begin, IdempotencyKey, SavedResponse};
pub use invitations::{Acceptance, Delivery, InvitationRecord};
pub use item_json::{ItemJsonError, RawItem, item_from_json, item_to_json};
pub use partners::{
    CommissionEntry, CommissionKind, CreditNote, PartnerRecord, RefundRecord, Refunded, accrual_entry,
    credit_note_id,
};
pub use payments::{
    AttemptStatus, ChargeDue, Decided, Decision, Payment, PaymentStatus, StripeEventRecord, parse_payment_id,
    payment_id,
};
pub use roles::{RoleRecord, RoleWrite};
pub use rollouts::{Rollout, RolloutFailure, RolloutMark, RolloutOutcome, RolloutStatus};
pub use sessions::{NewSession, Rotation, Session, SessionRefusal, unix_ms};
pub use subscriptions::{BundleSpan, PlanSpan, Subscriptions};
pub use tenants::{Lease, Page, ScaleOperation, TenantRecord};
pub use throttle::WindowCount;
pub use usage::{Recorded, UsageReport, UsageWindow};
pub use users::{UserChanges, UserHome, UserRecord};

use aws_sdk_dynamodb::Client;

/// The platform table. Cheap to clone: the SDK client is shared.
#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
    table: String,
}

impl Store {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Readiness probe: the table exists and answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.table_status().await.map(|_| ())
    }
}
