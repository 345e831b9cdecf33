//! Users live in their home partition (their tenant's, their partner's, or the platform's),
//! so a tenant's users sit under keys that lead with `TENANT#<id>` like the rest of its data.

use aws_sdk_dynamodb::types::{AttributeValue, Delete, TransactWriteItem};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dotmac_domain::{Caller, Email, PartnerId, RoleName, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use time::OffsetDateTime;

use crate::keys::{EMAIL_SK, GSI1, ItemKey, PK, SK, email_pk, s, user_home_pk, user_lookup_pk, user_sk};
use crate::tenants::Page;
use crate::{Store, StoreError};

/// A person who can sign in: platform staff (no tenant, no partner), a partner's staff, or a
/// tenant's user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: String,
    pub email: Email,
    /// PHC string (argon2id): algorithm, parameters and salt travel with the hash.
    pub password_hash: String,
    pub tenant_id: Option<TenantId>,
    #[serde(default)]
    pub partner_id: Option<PartnerId>,
    pub roles: Vec<RoleName>,
    pub active: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_login: Option<OffsetDateTime>,
}

impl UserRecord {
    pub fn home(&self) -> UserHome {
        UserHome::of(self.tenant_id, self.partner_id.as_ref())
    }

    /// The user as a token's caller (custom roles still to be resolved).
    pub fn caller(&self) -> Caller {
        Caller {
            user_id: self.id.clone(),
            tenant_id: self.tenant_id,
            partner_id: self.partner_id.clone(),
            roles: self.roles.clone(),
            custom_permissions: Vec::new(),
        }
    }
}

/// A user as the API shows it: never the password hash.
#[derive(Debug, Serialize)]
pub struct PublicUser<'a> {
    pub id: &'a str,
    pub email: &'a Email,
    pub tenant_id: Option<TenantId>,
    pub partner_id: Option<&'a PartnerId>,
    pub roles: &'a [RoleName],
    pub active: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_login: Option<OffsetDateTime>,
}

impl UserRecord {
    pub fn public(&self) -> PublicUser<'_> {
        PublicUser {
            id: &self.id,
            email: &self.email,
            tenant_id: self.tenant_id,
            partner_id: self.partner_id.as_ref(),
            roles: &self.roles,
            active: self.active,
            created_at: self.created_at,
            last_login: self.last_login,
        }
    }
}

/// The partition a user lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserHome {
    Platform,
    Partner(PartnerId),
    Tenant(TenantId),
}

impl UserHome {
    pub fn of(tenant_id: Option<TenantId>, partner_id: Option<&PartnerId>) -> UserHome {
        match (tenant_id, partner_id) {
            (Some(tenant), _) => UserHome::Tenant(tenant),
            (None, Some(partner)) => UserHome::Partner(partner.clone()),
            (None, None) => UserHome::Platform,
        }
    }

    pub fn pk(&self) -> String {
        user_home_pk(self)
    }
}

#[derive(Serialize, Deserialize)]
struct UserItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    /// Lets platform staff find a user by id alone.
    #[serde(rename = "GSI1PK")]
    gsi1pk: String,
    #[serde(rename = "GSI1SK")]
    gsi1sk: String,
    entity: String,
    #[serde(flatten)]
    user: UserRecord,
}

impl UserItem {
    fn from_record(user: &UserRecord) -> Self {
        UserItem {
            pk: user.home().pk(),
            sk: user_sk(&user.id),
            gsi1pk: user_lookup_pk(&user.id),
            gsi1sk: "USER".to_owned(),
            entity: "user".to_owned(),
            user: user.clone(),
        }
    }
}

pub(crate) fn user_key(home: &UserHome, id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([(PK.to_owned(), s(home.pk())), (SK.to_owned(), s(user_sk(id)))])
}

fn email_claim_key(email: &Email) -> HashMap<String, AttributeValue> {
    HashMap::from([(PK.to_owned(), s(email_pk(email.as_str()))), (SK.to_owned(), s(EMAIL_SK))])
}

/// What an update may change. Everything else about a user (id, e-mail, tenant, partner) is
/// fixed at creation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChanges {
    pub roles: Option<Vec<RoleName>>,
    pub active: Option<bool>,
}

fn transact_delete(
    table: &str,
    key: HashMap<String, AttributeValue>,
    condition: &str,
) -> Result<TransactWriteItem, StoreError> {
    Delete::builder()
        .table_name(table)
        .set_key(Some(key))
        .condition_expression(condition)
        .build()
        .map(|delete| TransactWriteItem::builder().delete(delete).build())
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn user_cursor(last: &HashMap<String, AttributeValue>) -> Option<String> {
    let sk = last.get(SK)?.as_s().ok()?;
    Some(URL_SAFE_NO_PAD.encode(sk))
}

impl Store {
    /// Creates a user and claims its e-mail in one transaction (`AlreadyExists` when the
    /// e-mail or the id is taken).
    pub async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let item: HashMap<String, AttributeValue> = serde_dynamo::to_item(UserItem::from_record(user))?;
        let mut claim = email_claim_key(&user.email);
        claim.insert("entity".to_owned(), s("email_claim"));
        claim.insert("user_id".to_owned(), s(&user.id));
        claim.insert("home".to_owned(), s(user.home().pk()));
        let result = self
            .client
            .transact_write_items()
            .transact_items(self.put_new(item)?)
            .transact_items(self.put_new(claim)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_transaction_canceled_exception()) => {
                Err(StoreError::AlreadyExists)
            }
            Err(error) => Err(StoreError::dynamo("TransactWriteItems", error)),
        }
    }

    pub async fn get_user(&self, home: &UserHome, id: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.get_item::<UserItem>(ItemKey::user(home.pk(), id)).await?.map(|item| item.user))
    }

    /// Where a user lives, by id alone (for platform staff, who are not scoped to one home).
    /// Only the home is taken from the index: its copy of the user may lag, so callers read
    /// the user itself from its home, strongly consistent.
    pub async fn find_user_home(&self, id: &str) -> Result<Option<UserHome>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI1)
            .key_condition_expression("GSI1PK = :pk")
            .expression_attribute_values(":pk", s(user_lookup_pk(id)))
            .limit(1)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("Query", e))?;
        let Some(item) = output.items.unwrap_or_default().into_iter().next() else { return Ok(None) };
        let user: UserItem = serde_dynamo::from_item(item)?;
        Ok(Some(user.user.home()))
    }

    pub async fn get_user_by_email(&self, email: &Email) -> Result<Option<UserRecord>, StoreError> {
        let claim = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(email_claim_key(email)))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?;
        let Some(claim) = claim.item else { return Ok(None) };
        let field = |name: &str| claim.get(name).and_then(|v| v.as_s().ok()).cloned();
        let (Some(user_id), Some(home)) = (field("user_id"), field("home")) else {
            return Err(StoreError::Corrupt(format!("e-mail claim of {email} lacks its user")));
        };
        Ok(self.get_item::<UserItem>(ItemKey::user(home, &user_id)).await?.map(|item| item.user))
    }

    /// The users of one home, in id order (ids are time-ordered), `limit` at a time.
    pub async fn list_users(
        &self,
        home: &UserHome,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<UserRecord>, StoreError> {
        let start = match cursor {
            None => None,
            Some(cursor) => {
                let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| StoreError::BadCursor)?;
                let sk = String::from_utf8(raw).map_err(|_| StoreError::BadCursor)?;
                if !sk.starts_with("USER#") {
                    return Err(StoreError::BadCursor);
                }
                Some(HashMap::from([(PK.to_owned(), s(home.pk())), (SK.to_owned(), s(sk))]))
            }
        };
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("PK = :pk AND begins_with(SK, :users)")
            .expression_attribute_values(":pk", s(home.pk()))
            .expression_attribute_values(":users", s("USER#"))
            .limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("Query", e))?;
        let items = output
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| serde_dynamo::from_item::<_, UserItem>(item).map(|u| u.user))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page { items, next_cursor: output.last_evaluated_key.as_ref().and_then(user_cursor) })
    }

    /// Applies `changes` to an existing user and returns it as stored after (`None` when
    /// there is no such user). Setting the same values again changes nothing, so retries are
    /// safe.
    pub async fn update_user(
        &self,
        home: &UserHome,
        id: &str,
        changes: &UserChanges,
    ) -> Result<Option<UserRecord>, StoreError> {
        let mut sets = Vec::new();
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(user_key(home, id)))
            .condition_expression("attribute_exists(PK)")
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
        if let Some(roles) = &changes.roles {
            sets.push("#roles = :roles");
            request = request.expression_attribute_names("#roles", "roles").expression_attribute_values(
                ":roles",
                AttributeValue::L(roles.iter().map(|r| s(r.as_str())).collect()),
            );
        }
        if let Some(active) = changes.active {
            sets.push("active = :active");
            request = request.expression_attribute_values(":active", AttributeValue::Bool(active));
        }
        if sets.is_empty() {
            return self.get_user(home, id).await;
        }
        match request.update_expression(format!("SET {}", sets.join(", "))).send().await {
            Ok(output) => output
                .attributes
                .map(|item| serde_dynamo::from_item::<_, UserItem>(item).map(|u| u.user))
                .transpose()
                .map_err(StoreError::from),
            Err(error) if crate::error::condition_failed(&error) => Ok(None),
            Err(error) => Err(StoreError::dynamo("UpdateItem", error)),
        }
    }

    /// Deletes a user and frees its e-mail, together. `false` when there was no such user.
    pub async fn delete_user(&self, user: &UserRecord) -> Result<bool, StoreError> {
        let result = self
            .client
            .transact_write_items()
            .transact_items(transact_delete(
                &self.table,
                user_key(&user.home(), &user.id),
                "attribute_exists(PK)",
            )?)
            .transact_items(transact_delete(
                &self.table,
                email_claim_key(&user.email),
                "attribute_exists(PK)",
            )?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_transaction_canceled_exception()) => {
                Ok(false)
            }
            Err(error) => Err(StoreError::dynamo("TransactWriteItems", error)),
        }
    }

    pub async fn record_login(&self, user: &UserRecord, at: OffsetDateTime) -> Result<(), StoreError> {
        let at = at
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.set_user_attribute(user, "last_login", s(at)).await
    }

    pub async fn set_password_hash(&self, user: &UserRecord, password_hash: &str) -> Result<(), StoreError> {
        self.set_user_attribute(user, "password_hash", s(password_hash)).await
    }

    async fn set_user_attribute(
        &self,
        user: &UserRecord,
        name: &str,
        value: AttributeValue,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(user_key(&user.home(), &user.id)))
            .update_expression("SET #name = :value")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_names("#name", name)
            .expression_attribute_values(":value", value)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("UpdateItem", e))?;
        Ok(())
    }
}
