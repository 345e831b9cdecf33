use aws_sdk_dynamodb::types::AttributeValue;
use dotmac_domain::{Email, Role, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use time::OffsetDateTime;

use crate::keys::{PK, SK, USER_SK, user_email_pk};
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

fn key(email: &Email) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(user_email_pk(email.as_str()))),
        (SK.to_owned(), AttributeValue::S(USER_SK.to_owned())),
    ])
}

impl Store {
    /// Creates a user unless one with that e-mail exists (`AlreadyExists`).
    pub async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let item: HashMap<String, AttributeValue> = serde_dynamo::to_item(UserItem {
            pk: user_email_pk(user.email.as_str()),
            sk: USER_SK.to_owned(),
            entity: "user".to_owned(),
            user: user.clone(),
        })?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error)
                if error.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::AlreadyExists)
            }
            Err(error) => Err(StoreError::dynamo("PutItem", error)),
        }
    }

    pub async fn get_user_by_email(&self, email: &Email) -> Result<Option<UserRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(email)))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?;
        output
            .item
            .map(|item| serde_dynamo::from_item::<_, UserItem>(item).map(|u| u.user))
            .transpose()
            .map_err(StoreError::from)
    }

    pub async fn record_login(&self, email: &Email, at: OffsetDateTime) -> Result<(), StoreError> {
        let at = at
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(email)))
            .update_expression("SET last_login = :at")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":at", AttributeValue::S(at))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("UpdateItem", e))?;
        Ok(())
    }
}
