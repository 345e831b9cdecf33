use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use dotmac_domain::{Email, Role, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use time::OffsetDateTime;

use crate::keys::{EMAIL_SK, PK, SK, USER_SK, email_pk, s, user_pk};
use crate::{Store, StoreError};

/// A person who can sign in: platform staff (no tenant) or a tenant's user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: String,
    pub email: Email,
    /// PHC string (argon2id): algorithm, parameters and salt travel with the hash.
    pub password_hash: String,
    pub tenant_id: Option<TenantId>,
    pub roles: Vec<Role>,
    pub active: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_login: Option<OffsetDateTime>,
}

#[derive(Serialize, Deserialize)]
struct UserItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    entity: String,
    #[serde(flatten)]
    user: UserRecord,
}

fn user_key(id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([(PK.to_owned(), s(user_pk(id))), (SK.to_owned(), s(USER_SK))])
}

impl Store {
    /// Creates a user and claims its e-mail in one transaction (`AlreadyExists` when the
    /// e-mail or the id is taken).
    pub async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let item: HashMap<String, AttributeValue> = serde_dynamo::to_item(UserItem {
            pk: user_pk(&user.id),
            sk: USER_SK.to_owned(),
            entity: "user".to_owned(),
            user: user.clone(),
        })?;
        let claim = HashMap::from([
            (PK.to_owned(), s(email_pk(user.email.as_str()))),
            (SK.to_owned(), s(EMAIL_SK)),
            ("entity".to_owned(), s("email_claim")),
            ("user_id".to_owned(), s(&user.id)),
        ]);
        let put = |item| {
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(PK)")
                .build()
                .map(|put| TransactWriteItem::builder().put(put).build())
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        };
        let result = self
            .client
            .transact_write_items()
            .transact_items(put(item)?)
            .transact_items(put(claim)?)
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

    pub async fn get_user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(user_key(id)))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?;
        output
            .item
            .map(|item| serde_dynamo::from_item::<_, UserItem>(item).map(|u| u.user))
            .transpose()
            .map_err(StoreError::from)
    }

    pub async fn get_user_by_email(&self, email: &Email) -> Result<Option<UserRecord>, StoreError> {
        let claim = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(email_pk(email.as_str())))
            .key(SK, s(EMAIL_SK))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?;
        let user_id = claim.item.and_then(|item| item.get("user_id").and_then(|v| v.as_s().ok()).cloned());
        match user_id {
            Some(id) => self.get_user(&id).await,
            None => Ok(None),
        }
    }

    pub async fn record_login(&self, user_id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        let at = at
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(user_key(user_id)))
            .update_expression("SET last_login = :at")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":at", s(at))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("UpdateItem", e))?;
        Ok(())
    }

    pub async fn set_password_hash(&self, user_id: &str, password_hash: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(user_key(user_id)))
            .update_expression("SET password_hash = :hash")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":hash", s(password_hash))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("UpdateItem", e))?;
        Ok(())
    }
}
