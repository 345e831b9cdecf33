//! Creating a user, as a use case: no HTTP in it, so an invitation flow, a job or a portal
//! page creates users exactly as `POST /v1/users` does.

use dotmac_domain::{
    Account, Action, AssignmentError, Caller, Denied, Email, InvalidValue, PartnerId, Resource, RoleName,
    TenantId, authorize, check_assignment,
};
use dotmac_store::{Store, StoreError, UserHome, UserRecord};
use time::OffsetDateTime;

use crate::users::{home_target, tenant_roles};

/// A user to create, parsed and placed: its home (tenant, partner or the platform) is the one
/// the request names, else the caller's own.
pub struct NewUser {
    pub email: Email,
    pub password: String,
    pub roles: Vec<RoleName>,
    pub tenant_id: Option<TenantId>,
    pub partner_id: Option<PartnerId>,
}

impl NewUser {
    pub fn home(&self) -> UserHome {
        UserHome::of(self.tenant_id, self.partner_id.as_ref())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error(transparent)]
    Denied(#[from] Denied),
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

/// The checks that come before any work: the caller may create users there, may give these
/// roles to this account, and the password passes the policy.
pub async fn check_new_user(store: &Store, caller: &Caller, new: &NewUser) -> Result<(), CreateUserError> {
    authorize(caller, Resource::User, Action::Create, home_target(&new.home()))?;
    let account = Account { user_id: "", tenant_id: new.tenant_id, partner_id: new.partner_id.as_ref() };
    let custom = tenant_roles(store, caller, new.tenant_id).await?;
    check_assignment(caller, account, &new.roles, &custom)?;
    // The policy speaks of `new_password` (a password change); here the field is `password`.
    dotmac_domain::password_policy::check(&new.password, &new.email)
        .map_err(|refused| InvalidValue::new("password", refused.reason))?;
    Ok(())
}

/// Creates a user: checked as `check_new_user` says, its password hashed with argon2id, its
/// e-mail claimed platform-wide (sign-in names are global).
pub async fn create_user(
    store: &Store,
    caller: &Caller,
    new: NewUser,
) -> Result<UserRecord, CreateUserError> {
    check_new_user(store, caller, &new).await?;
    let password = new.password;
    let password_hash = tokio::task::spawn_blocking(move || dotmac_tokens::hash_password(&password))
        .await
        .map_err(|e| CreateUserError::Hashing(e.to_string()))?
        .map_err(|e| CreateUserError::Hashing(e.to_string()))?;
    let user = UserRecord {
        id: uuid::Uuid::now_v7().to_string(),
        email: new.email,
        password_hash,
        tenant_id: new.tenant_id,
        partner_id: new.partner_id,
        roles: new.roles,
        active: true,
        created_at: OffsetDateTime::now_utc(),
        last_login: None,
        sessions_valid_after_ms: 0,
    };
    match store.fenced(caller.fence()).create_user(&user).await {
        Ok(()) => {}
        Err(StoreError::AlreadyExists) => return Err(CreateUserError::EmailTaken),
        Err(error) => return Err(error.into()),
    }
    tracing::info!(user_id = %user.id, by = %caller.user_id, "user created");
    Ok(user)
}
