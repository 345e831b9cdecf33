//! Key layout of the single table, and the attribute-value shorthands, in one place.

use aws_sdk_dynamodb::types::AttributeValue;
use dotmac_domain::{PartnerId, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub const PK: &str = "PK";
pub const SK: &str = "SK";
pub const GSI1: &str = "GSI1";
pub const GSI1PK: &str = "GSI1PK";
pub const GSI1SK: &str = "GSI1SK";
/// DynamoDB's TTL attribute (epoch seconds).
pub const EXPIRES_AT: &str = "expires_at";

pub fn tenant_pk(id: TenantId) -> String {
    format!("TENANT#{id}")
}
pub const TENANT_PROFILE_SK: &str = "PROFILE";
/// A usage report in its tenant's partition (`USAGE#<report id>`).
pub(crate) const USAGE_SK_PREFIX: &str = "USAGE#";
/// All tenants sit in one GSI partition, sorted by their time-ordered id: a control plane's
/// tenant count stays far below one partition's limits.
pub const TENANTS_GSI1PK: &str = "TENANTS";
/// The GSI1 partition of events not yet published (see `events`): sparse, an event leaves it
/// once published.
pub const OUTBOX_GSI1PK: &str = "OUTBOX";

pub fn slug_pk(slug: &str) -> String {
    format!("SLUG#{slug}")
}
pub const SLUG_SK: &str = "SLUG";

pub fn plan_pk(id: &str) -> String {
    format!("PLAN#{id}")
}
pub const PLAN_SK: &str = "PLAN";

/// Users sit in their home's partition: the tenant's, the partner's, or the platform's.
pub fn user_home_pk(home: &crate::users::UserHome) -> String {
    use crate::users::UserHome;
    match home {
        UserHome::Tenant(tenant) => tenant_pk(*tenant),
        UserHome::Partner(partner) => partner_pk(partner),
        UserHome::Platform => PLATFORM_PK.to_owned(),
    }
}
pub fn user_sk(id: &str) -> String {
    format!("USER#{id}")
}
/// GSI1 partition finding a user by id alone.
pub fn user_lookup_pk(id: &str) -> String {
    format!("USER#{id}")
}
pub fn partner_pk(partner: &PartnerId) -> String {
    format!("PARTNER#{partner}")
}
/// The partition of platform-level records that belong to no tenant (platform staff).
pub const PLATFORM_PK: &str = "PLATFORM";

/// An invitation, in the partition of the home it invites into (like the user it becomes).
pub fn invitation_sk(id: &str) -> String {
    format!("{INVITATION_SK_PREFIX}{id}")
}
pub const INVITATION_SK_PREFIX: &str = "INVITATION#";
/// GSI1 partition finding an invitation by id alone.
pub fn invitation_lookup_pk(id: &str) -> String {
    format!("INVITATION#{id}")
}
/// Finds an invitation by the digest of its token (the token itself is never stored).
pub fn invitation_token_pk(digest: &str) -> String {
    format!("INVITATION_TOKEN#{digest}")
}
pub const INVITATION_TOKEN_SK: &str = "TOKEN";

/// A tenant's custom role.
pub fn role_sk(name: &str) -> String {
    format!("ROLE#{name}")
}
pub const ROLE_SK_PREFIX: &str = "ROLE#";
/// A tenant container's latest health report.
pub const HEARTBEAT_SK: &str = "HEARTBEAT";
/// Claims an e-mail address for one user, so sign-in finds the user and no two share it.
pub fn email_pk(email: &str) -> String {
    format!("EMAIL#{email}")
}
pub const EMAIL_SK: &str = "EMAIL";

/// A refresh-token family (one sign-in and its rotations).
pub fn session_pk(family: &str) -> String {
    format!("SESSION#{family}")
}
pub const SESSION_SK: &str = "SESSION";
/// A signed-out access token, refused until it would have expired anyway.
pub fn denied_token_pk(jti: &str) -> String {
    format!("DENIED#{jti}")
}
pub const DENIED_TOKEN_SK: &str = "TOKEN";

pub fn idempotency_pk(scope: &str, key: &str) -> String {
    format!("IDEMPOTENCY#{scope}#{key}")
}
pub const IDEMPOTENCY_SK: &str = "RESPONSE";

/// The primary key of one item (partition and sort key), with one constructor per kind of
/// item, so each kind's key is spelled out here only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ItemKey {
    pk: String,
    sk: String,
}

impl ItemKey {
    fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Self { pk: pk.into(), sk: sk.into() }
    }

    /// An item of a tenant's partition, by its sort key.
    pub(crate) fn in_tenant(tenant: TenantId, sk: impl Into<String>) -> Self {
        Self::new(tenant_pk(tenant), sk)
    }

    /// For the kinds whose keys are spelled out in their own module (`catalog`, `subscriptions`,
    /// `billing`).
    pub(crate) fn from_parts(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Self::new(pk, sk)
    }

    /// A tenant's profile.
    pub(crate) fn tenant(id: TenantId) -> Self {
        Self::new(tenant_pk(id), TENANT_PROFILE_SK)
    }

    pub(crate) fn slug(slug: &str) -> Self {
        Self::new(slug_pk(slug), SLUG_SK)
    }

    pub(crate) fn plan(id: &str) -> Self {
        Self::new(plan_pk(id), PLAN_SK)
    }

    /// A user in the partition `home_pk` (`UserHome::pk`, or as an e-mail claim records it).
    pub(crate) fn user(home_pk: impl Into<String>, id: &str) -> Self {
        Self::new(home_pk, user_sk(id))
    }

    /// An invitation in the partition `home_pk` (`UserHome::pk`, or as its token records it).
    pub(crate) fn invitation(home_pk: impl Into<String>, id: &str) -> Self {
        Self::new(home_pk, invitation_sk(id))
    }

    pub(crate) fn invitation_token(digest: &str) -> Self {
        Self::new(invitation_token_pk(digest), INVITATION_TOKEN_SK)
    }

    pub(crate) fn email(email: &str) -> Self {
        Self::new(email_pk(email), EMAIL_SK)
    }

    pub(crate) fn role(tenant: TenantId, name: &str) -> Self {
        Self::new(tenant_pk(tenant), role_sk(name))
    }

    /// A usage report of a tenant, by its report id.
    pub(crate) fn usage(tenant: TenantId, report_id: &str) -> Self {
        Self::new(tenant_pk(tenant), format!("{USAGE_SK_PREFIX}{report_id}"))
    }

    /// An event in a tenant's log, by its sequence (zero-padded: key order is number order).
    pub(crate) fn tenant_event(tenant: TenantId, sequence: u64) -> Self {
        Self::new(tenant_pk(tenant), format!("EVENT#{sequence:010}"))
    }

    pub(crate) fn heartbeat(tenant: TenantId) -> Self {
        Self::new(tenant_pk(tenant), HEARTBEAT_SK)
    }

    pub(crate) fn session(family: &str) -> Self {
        Self::new(session_pk(family), SESSION_SK)
    }

    pub(crate) fn denied_token(jti: &str) -> Self {
        Self::new(denied_token_pk(jti), DENIED_TOKEN_SK)
    }

    pub(crate) fn idempotency(scope: &str, key: &str) -> Self {
        Self::new(idempotency_pk(scope, key), IDEMPOTENCY_SK)
    }

    /// A rate counter's window (`window_pk` names the key and the window).
    pub(crate) fn counter(window_pk: String) -> Self {
        Self::new(window_pk, COUNTER_SK)
    }

    /// The key as DynamoDB takes it (and the start of an item with this key).
    pub(crate) fn into_item(self) -> HashMap<String, AttributeValue> {
        HashMap::from([(PK.to_owned(), s(self.pk)), (SK.to_owned(), s(self.sk))])
    }
}
const COUNTER_SK: &str = "COUNT";

/// A record as stored: its key, its GSI1 key (for the kinds found through the index), its
/// kind (`entity`), and the record's own attributes beside them.
#[derive(Serialize, Deserialize)]
pub(crate) struct Stored<T> {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    #[serde(rename = "GSI1PK", default, skip_serializing_if = "Option::is_none")]
    gsi1pk: Option<String>,
    #[serde(rename = "GSI1SK", default, skip_serializing_if = "Option::is_none")]
    gsi1sk: Option<String>,
    entity: String,
    #[serde(flatten)]
    pub(crate) record: T,
}

impl<T: Serialize> Stored<T> {
    pub(crate) fn new(key: ItemKey, entity: &str, record: T) -> Self {
        Self { pk: key.pk, sk: key.sk, gsi1pk: None, gsi1sk: None, entity: entity.to_owned(), record }
    }

    /// The record is also found through GSI1, under this key.
    pub(crate) fn indexed(self, gsi1pk: impl Into<String>, gsi1sk: impl Into<String>) -> Self {
        Self { gsi1pk: Some(gsi1pk.into()), gsi1sk: Some(gsi1sk.into()), ..self }
    }

    pub(crate) fn to_item(&self) -> Result<HashMap<String, AttributeValue>, crate::StoreError> {
        Ok(serde_dynamo::to_item(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_record_carries_its_key_kind_and_index_key_only_when_indexed() {
        #[derive(Serialize)]
        struct Record {
            name: &'static str,
        }
        let plain =
            Stored::new(ItemKey::plan("usage"), "plan", Record { name: "x" }).to_item().expect("item");
        let mut keys: Vec<_> = plain.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["PK", "SK", "entity", "name"]);
        assert_eq!(plain["PK"], s("PLAN#usage"));
        assert_eq!(plain["SK"], s(PLAN_SK));
        let indexed = Stored::new(ItemKey::user("PLATFORM", "u1"), "user", Record { name: "x" })
            .indexed(user_lookup_pk("u1"), "USER")
            .to_item()
            .expect("item");
        assert_eq!(indexed["SK"], s("USER#u1"));
        assert_eq!(indexed[GSI1PK], s("USER#u1"));
        assert_eq!(indexed[GSI1SK], s("USER"));
    }
}
