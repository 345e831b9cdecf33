//! Creating a user, as a use case: no HTTP in it, so the invitation flow, a job or a portal
//! page creates users exactly as `POST /v1/users` does.

use dotmac_domain::{
    Account, Action, AssignmentError, Caller, Denied, Email, InvalidValue, PartnerId, Resource, RoleName,
    TenantId, authorize, check_assignment,
};
use dotmac_store::{Store, StoreError, UserHome, UserRecord};
use time::OffsetDateTime;

use crate::users::{home_target, tenant_roles};

/// An account to be, parsed and placed: its home (tenant, partner or the platform) is the one
/// the request names, else the caller's own. What an invitation carries, and a user without
/// its password.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub email: Email,
    pub roles: Vec<RoleName>,
    pub tenant_id: Option<TenantId>,
    pub partner_id: Option<PartnerId>,
}

impl NewAccount {
    pub fn home(&self) -> UserHome {
        UserHome::of(self.tenant_id, self.partner_id.as_ref())
    }
}

/// A user to create directly (platform staff seeding accounts).
pub struct NewUser {
    pub account: NewAccount,
    pub password: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error(transparent)]
    Denied(#[from] Denied),
    /// Only platform staff create accounts directly; everyone else invites.
    #[error("only platform staff create users directly; invite instead")]
    InviteInstead,
    #[error(transparent)]
    Assignment(#[from] AssignmentError),
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
    #[error("a user with this e-mail already exists")]
    EmailTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

/// The checks on who may have an account made there: the caller may create users in its
/// home and may give these roles to such an account. Inviting asks the same.
pub async fn check_account(
    store: &Store,
    caller: &Caller,
    account: &NewAccount,
) -> Result<(), CreateUserError> {
    authorize(caller, Resource::User, Action::Create, home_target(&account.home()))?;
    let holder =
        Account { user_id: "", tenant_id: account.tenant_id, partner_id: account.partner_id.as_ref() };
    let custom = tenant_roles(store, caller, account.tenant_id).await?;
    check_assignment(caller, holder, &account.roles, &custom)?;
    Ok(())
}

/// The password policy for a new account's password, naming the field it came in
/// (`password`; the policy itself speaks of a password change's `new_password`).
pub fn check_password(password: &str, email: &Email) -> Result<(), InvalidValue> {
    dotmac_domain::password_policy::check(password, email)
        .map_err(|refused| InvalidValue::new("password", refused.reason))
}

/// argon2id, off the async threads (it is slow on purpose).
pub async fn hash_new_password(password: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || dotmac_tokens::hash_password(&password))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// The one place a new user's record is made, for direct creation and for an accepted
/// invitation alike.
pub fn user_record(account: NewAccount, password_hash: String, created_at: OffsetDateTime) -> UserRecord {
    UserRecord {
        id: uuid::Uuid::now_v7().to_string(),
        email: account.email,
        password_hash,
        tenant_id: account.tenant_id,
        partner_id: account.partner_id,
        roles: account.roles,
        active: true,
        created_at,
        last_login: None,
        sessions_valid_after_ms: 0,
    }
}

/// The checks that come before any work: platform staff only, who may create users there and
/// give these roles, and a password that passes the policy.
pub async fn check_new_user(store: &Store, caller: &Caller, new: &NewUser) -> Result<(), CreateUserError> {
    check_account(store, caller, &new.account).await?;
    // After the policy check, so a caller who may not create users there hears that first.
    if !caller.has_global_scope() {
        return Err(CreateUserError::InviteInstead);
    }
    check_password(&new.password, &new.account.email)?;
    Ok(())
}

/// Creates a user directly (platform staff seeding accounts; everyone else invites): checked
/// as `check_new_user` says, its password hashed with argon2id, its e-mail claimed
/// platform-wide (sign-in names are global).
pub async fn create_user(
    store: &Store,
    caller: &Caller,
    new: NewUser,
) -> Result<UserRecord, CreateUserError> {
    check_new_user(store, caller, &new).await?;
    let password_hash = hash_new_password(new.password).await.map_err(CreateUserError::Hashing)?;
    let user = user_record(new.account, password_hash, OffsetDateTime::now_utc());
    match store.fenced(caller.fence()).create_user(&user).await {
        Ok(()) => {}
        Err(StoreError::AlreadyExists) => return Err(CreateUserError::EmailTaken),
        Err(error) => return Err(error.into()),
    }
    tracing::info!(user_id = %user.id, by = %caller.user_id, "user created");
    Ok(user)
}
