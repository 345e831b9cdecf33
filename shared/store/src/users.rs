//! Users live in their home partition (their tenant's, their partner's, or the platform's),
//! so a tenant's users sit under keys that lead with `TENANT#<id>` like the rest of its data.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, TransactWriteItem};
use dotmac_domain::{Caller, Email, PartnerId, RoleName, TenantId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::dynamo::{Attributes, Expr, ITEM_EXISTS, Item, Query, Read, decode, decode_cursor};
use crate::keys::{GSI1, ItemKey, SK, Stored, n, s, user_home_pk, user_lookup_pk};
use crate::sessions::SESSIONS_VALID_AFTER;
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
    /// Every session started at or before this moment (ms since the epoch) is over: set by a
    /// password change, "sign out everywhere", a deactivation or a change of roles.
    #[serde(default)]
    pub sessions_valid_after_ms: i64,
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

type UserItem = Stored<UserRecord>;

/// A user's item, in its home; GSI1 lets platform staff find it by id alone.
fn user_item(user: &UserRecord) -> Result<Item, StoreError> {
    let stored = Stored::new(user_key(&user.home(), &user.id), "user", user);
    stored.indexed(user_lookup_pk(&user.id), "USER").to_item()
}

fn user_key(home: &UserHome, id: &str) -> ItemKey {
    ItemKey::user(home.pk(), id)
}

fn email_claim_key(email: &Email) -> ItemKey {
    ItemKey::email(email.as_str())
}

/// Every user's sort key starts so (`user_sk`).
const USER_SK_PREFIX: &str = "USER#";
/// The e-mail claim's attributes: its user, and the partition the user lives in.
const CLAIM_USER_ID: &str = "user_id";
const CLAIM_HOME: &str = "home";

/// What an update may change. Everything else about a user (id, e-mail, tenant, partner) is
/// fixed at creation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChanges {
    pub roles: Option<Vec<RoleName>>,
    pub active: Option<bool>,
}

/// The start of the page after the user a cursor names (its sort key, `SK`).
fn users_after(home: &UserHome, cursor: &str) -> Result<Item, StoreError> {
    let sk = decode_cursor(cursor)?;
    let id = sk.strip_prefix(USER_SK_PREFIX).ok_or(StoreError::BadCursor)?;
    Ok(ItemKey::user(home.pk(), id).into_item())
}

impl Store {
    /// Creates a user and claims its e-mail in one transaction (`AlreadyExists` when the
    /// e-mail or the id is taken).
    pub async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let steps = self.user_creation_steps(user)?;
        self.transact(steps).await?.map_err(|_| StoreError::AlreadyExists)
    }

    /// The transaction steps creating `user` and claiming its e-mail, in that order (each
    /// refused if taken), for `create_user` and for writes that create a user along with
    /// something else (accepting an invitation).
    pub(crate) fn user_creation_steps(
        &self,
        user: &UserRecord,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let item = user_item(user)?;
        let mut claim = email_claim_key(&user.email).into_item();
        claim.insert("entity".to_owned(), s("email_claim"));
        claim.insert(CLAIM_USER_ID.to_owned(), s(&user.id));
        claim.insert(CLAIM_HOME.to_owned(), s(user.home().pk()));
        Ok(vec![self.put_new(item)?, self.put_new(claim)?])
    }

    pub async fn get_user(&self, home: &UserHome, id: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.get_item::<UserItem>(ItemKey::user(home.pk(), id)).await?.map(|item| item.record))
    }

    /// Where a user lives, by id alone (for platform staff, who are not scoped to one home).
    /// Only the home is taken from the index: its copy of the user may lag, so callers read
    /// the user itself from its home, strongly consistent.
    pub async fn find_user_home(&self, id: &str) -> Result<Option<UserHome>, StoreError> {
        self.home_by_lookup(user_lookup_pk(id), UserRecord::home).await
    }

    /// The home of the record GSI1 finds under `lookup_pk` (a user's or an invitation's id),
    /// as `home` reads it from the record.
    pub(crate) async fn home_by_lookup<T: DeserializeOwned>(
        &self,
        lookup_pk: String,
        home: fn(&T) -> UserHome,
    ) -> Result<Option<UserHome>, StoreError> {
        let by_id = Query::index(GSI1, Expr::new("GSI1PK = :pk").value(":pk", s(lookup_pk))).limit(1);
        let (found, _) = self.query_page::<Stored<T>>(by_id).await?;
        Ok(found.first().map(|item| home(&item.record)))
    }

    pub async fn get_user_by_email(&self, email: &Email) -> Result<Option<UserRecord>, StoreError> {
        let Some(claim) = self.read_item(email_claim_key(email), Read::Eventual, None).await? else {
            return Ok(None);
        };
        let (user_id, home) = (claim.string(CLAIM_USER_ID)?, claim.string(CLAIM_HOME)?);
        Ok(self.get_item::<UserItem>(ItemKey::user(home, &user_id)).await?.map(|item| item.record))
    }

    /// The users of one home, in id order (ids are time-ordered), `limit` at a time.
    pub async fn list_users(
        &self,
        home: &UserHome,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<UserRecord>, StoreError> {
        let start = cursor.map(|cursor| users_after(home, cursor)).transpose()?;
        let users = Expr::new("PK = :pk AND begins_with(SK, :users)")
            .value(":pk", s(home.pk()))
            .value(":users", s(USER_SK_PREFIX));
        self.page(Query::table(users).limit(limit).start(start), SK, |item: UserItem| item.record).await
    }

    /// Applies `changes` to an existing user and returns it as stored after (`None` when
    /// there is no such user). New roles or a deactivation end the user's sessions (as of
    /// `now_ms`) in the same write: a token must not keep powers its user lost. Setting the
    /// same values again changes nothing else, so retries are safe.
    pub async fn update_user(
        &self,
        home: &UserHome,
        id: &str,
        changes: &UserChanges,
        now_ms: i64,
    ) -> Result<Option<UserRecord>, StoreError> {
        let mut sets = Vec::new();
        let mut update = Expr::new(String::new());
        if let Some(roles) = &changes.roles {
            sets.push("#roles = :roles");
            update = update
                .name("#roles", "roles")
                .value(":roles", AttributeValue::L(roles.iter().map(|r| s(r.as_str())).collect()));
        }
        if let Some(active) = changes.active {
            sets.push("active = :active");
            update = update.value(":active", AttributeValue::Bool(active));
        }
        if sets.is_empty() {
            return self.get_user(home, id).await;
        }
        if changes.roles.is_some() || changes.active == Some(false) {
            sets.push("#ended = :now");
            update = update.name("#ended", SESSIONS_VALID_AFTER).value(":now", n(now_ms));
        }
        let update = update.with_text(format!("SET {}", sets.join(", ")));
        let exists = Some(Expr::new(ITEM_EXISTS));
        match self.update(user_key(home, id), update, exists, Some(ReturnValue::AllNew)).await? {
            Ok(after) => Ok(after.map(decode::<UserItem>).transpose()?.map(|item| item.record)),
            // Refused: there is no such user.
            Err(_) => Ok(None),
        }
    }

    /// Deletes a user and frees its e-mail, together. `false` when there was no such user.
    pub async fn delete_user(&self, user: &UserRecord) -> Result<bool, StoreError> {
        let steps = vec![
            self.delete_step(user_key(&user.home(), &user.id), Expr::new(ITEM_EXISTS))?,
            self.delete_step(email_claim_key(&user.email), Expr::new(ITEM_EXISTS))?,
        ];
        Ok(self.transact(steps).await?.is_ok())
    }

    /// Takes the role `name` from every user of `tenant` holding it, ending their sessions.
    /// Each user is changed only if its roles are still what was read, so a concurrent change
    /// of its roles is never overwritten (it is read again and retried).
    pub(crate) async fn take_role_from_holders(
        &self,
        tenant: TenantId,
        name: &RoleName,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        const ATTEMPTS_PER_USER: usize = 5;
        let home = UserHome::Tenant(tenant);
        let holders = Expr::new("PK = :pk AND begins_with(SK, :users)")
            .value(":pk", s(home.pk()))
            .value(":users", s(USER_SK_PREFIX));
        let holding =
            Expr::new("contains(#roles, :role)").name("#roles", "roles").value(":role", s(name.as_str()));
        let users: Vec<UserItem> = self.query_all(Query::table(holders).filter(Some(holding))).await?;
        let mut taken = 0;
        for mut user in users.into_iter().map(|item| item.record) {
            for attempt in 1..=ATTEMPTS_PER_USER {
                if !user.roles.contains(name) {
                    break;
                }
                let kept: Vec<AttributeValue> =
                    user.roles.iter().filter(|role| *role != name).map(|role| s(role.as_str())).collect();
                let read: Vec<AttributeValue> = user.roles.iter().map(|role| s(role.as_str())).collect();
                let update = Expr::new(format!("SET #roles = :kept, {SESSIONS_VALID_AFTER} = :now"))
                    .name("#roles", "roles")
                    .value(":kept", AttributeValue::L(kept))
                    .value(":now", n(now_ms));
                let unchanged = Expr::new("#roles = :read").value(":read", AttributeValue::L(read));
                if self.update(user_key(&home, &user.id), update, Some(unchanged), None).await?.is_ok() {
                    taken += 1;
                    break;
                }
                match self.get_user(&home, &user.id).await? {
                    Some(current) if attempt < ATTEMPTS_PER_USER => user = current,
                    Some(_) => {
                        return Err(StoreError::VersionConflict { expected: 0 });
                    }
                    None => break,
                }
            }
        }
        Ok(taken)
    }

    pub async fn record_login(&self, user: &UserRecord, at: OffsetDateTime) -> Result<(), StoreError> {
        let at = at
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.set_user_attribute(user, "last_login", s(at)).await
    }

    async fn set_user_attribute(
        &self,
        user: &UserRecord,
        name: &str,
        value: AttributeValue,
    ) -> Result<(), StoreError> {
        let set = Expr::new("SET #name = :value").name("#name", name).value(":value", value);
        self.update(user_key(&user.home(), &user.id), set, Some(Expr::new(ITEM_EXISTS)), None).await??;
        Ok(())
    }
}
