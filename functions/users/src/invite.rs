//! Invitations, as use cases (no HTTP in them; the clock is a parameter). Inviting is how a
//! tenant's or a partner's admin creates an account: the invitation names the address and
//! the roles, the invitee sets the password through a single-use, expiring link, and only
//! then is the address claimed. Inviting never looks the address up, so its answer is the
//! same whether or not the address belongs to anyone anywhere; only the invitee, holding the
//! token, learns at acceptance that it was taken.

use dotmac_domain::{
    Account, Action, AssignmentError, Caller, Denied, Fence, InvalidValue, Resource, authorize,
};
use dotmac_store::{Acceptance, Delivery, InvitationRecord, Store, StoreError, UserHome, UserRecord};
use dotmac_tokens::InvitationToken;
use time::{Duration, OffsetDateTime};

use crate::mail::InvitationMail;
use crate::new_user::{
    CreateUserError, NewAccount, check_account, check_password, hash_new_password, user_record,
};
use crate::users::{home_target, may_manage, tenant_roles};

#[derive(Debug, thiserror::Error)]
pub enum InvitationError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error(transparent)]
    Assignment(#[from] AssignmentError),
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
    /// No invitation by that id where the caller can see, or (accepting) none for that
    /// token: never issued, already used, revoked or replaced by a resend.
    #[error("no such invitation")]
    NotFound,
    #[error("the invitation has expired")]
    Expired,
    /// The invitation holds roles the caller could not give: it may not revoke or resend it.
    #[error("the invitation holds roles beyond the caller's")]
    BeyondCaller,
    /// Accepting: the address belongs to another account by now. Told to the invitee only.
    #[error("the e-mail address already belongs to an account")]
    EmailTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Unexpected(String),
}

impl From<CreateUserError> for InvitationError {
    fn from(error: CreateUserError) -> Self {
        match error {
            CreateUserError::Denied(denied) => denied.into(),
            CreateUserError::Assignment(refused) => refused.into(),
            CreateUserError::Invalid(invalid) => invalid.into(),
            CreateUserError::Store(error) => error.into(),
            other => InvitationError::Unexpected(other.to_string()),
        }
    }
}

/// How long links last, and how they are sent.
#[derive(Clone)]
pub struct Invitations {
    pub mail: InvitationMail,
    pub ttl: Duration,
}

/// A new token, a failure of the system's randomness reported as what it is.
fn fresh_token() -> Result<InvitationToken, InvitationError> {
    InvitationToken::generate().map_err(|e| InvitationError::Unexpected(e.to_string()))
}

/// Sends the invitation's e-mail and records how it went. Neither step fails the request:
/// the invitation is recorded already, so a failed send says `failed` for a resend, and a
/// status that could not be written leaves it `pending` (which a resend also fixes) rather
/// than turning a sent invitation into an error the client would retry into a second one.
async fn deliver(
    store: &Store,
    fence: Fence,
    mail: &InvitationMail,
    mut invitation: InvitationRecord,
    token: &InvitationToken,
) -> InvitationRecord {
    invitation.delivery = match mail.send(&invitation, token).await {
        Ok(()) => Delivery::Sent,
        Err(error) => {
            tracing::warn!(invitation_id = %invitation.id, %error, "invitation e-mail failed; it can be resent");
            Delivery::Failed
        }
    };
    if let Err(error) = store.fenced(fence).set_invitation_delivery(&invitation, invitation.delivery).await {
        tracing::warn!(invitation_id = %invitation.id, %error, "invitation delivery status not recorded");
    }
    invitation
}

/// Invites `account`: allowed to whoever may create that account (`check_account`), recorded
/// with the digest of a fresh token that expires `ttl` after `now`, then e-mailed.
pub async fn invite(
    store: &Store,
    invitations: &Invitations,
    caller: &Caller,
    account: NewAccount,
    now: OffsetDateTime,
) -> Result<InvitationRecord, InvitationError> {
    check_account(store, caller, &account).await?;
    let token = fresh_token()?;
    let invitation = InvitationRecord {
        id: uuid::Uuid::now_v7().to_string(),
        email: account.email,
        roles: account.roles,
        tenant_id: account.tenant_id,
        partner_id: account.partner_id,
        invited_by: caller.user_id.clone(),
        created_at: now,
        expires_at: (now + invitations.ttl).unix_timestamp(),
        token_digest: token.digest(),
        delivery: Delivery::Pending,
    };
    store.fenced(caller.fence()).create_invitation(&invitation).await?;
    tracing::info!(invitation_id = %invitation.id, by = %caller.user_id, "invitation recorded");
    Ok(deliver(store, caller.fence(), &invitations.mail, invitation, &token).await)
}

/// The invitation `id` where the caller may manage it, and may give the roles it holds.
async fn manageable(store: &Store, caller: &Caller, id: &str) -> Result<InvitationRecord, InvitationError> {
    // Refused before looking, so a caller without the right learns nothing from a 404.
    let own_home = UserHome::of(caller.tenant_id, caller.partner_id.as_ref());
    authorize(caller, Resource::User, Action::Create, home_target(&own_home))?;
    let home = match caller.fence() {
        Fence::Global => store.find_invitation_home(id).await?.ok_or(InvitationError::NotFound)?,
        Fence::Tenant(_) | Fence::Partner(_) => own_home,
        Fence::Nothing => return Err(Denied { resource: Resource::User, action: Action::Create }.into()),
    };
    let invitation =
        store.fenced(caller.fence()).get_invitation(&home, id).await?.ok_or(InvitationError::NotFound)?;
    let custom = tenant_roles(store, caller, invitation.tenant_id).await?;
    let account =
        Account { user_id: "", tenant_id: invitation.tenant_id, partner_id: invitation.partner_id.as_ref() };
    if !may_manage(caller, account, &invitation.roles, &custom) {
        return Err(InvitationError::BeyondCaller);
    }
    Ok(invitation)
}

/// Withdraws the invitation `id`: its link stops working.
pub async fn revoke(store: &Store, caller: &Caller, id: &str) -> Result<(), InvitationError> {
    let invitation = manageable(store, caller, id).await?;
    if !store.fenced(caller.fence()).revoke_invitation(&invitation).await? {
        return Err(InvitationError::NotFound);
    }
    tracing::info!(invitation_id = %invitation.id, by = %caller.user_id, "invitation revoked");
    Ok(())
}

/// Sends the invitation `id` again with a new link, valid `ttl` from `now`; the old link
/// stops working (only the digest of a token is kept, so the old one cannot be sent again).
pub async fn resend(
    store: &Store,
    invitations: &Invitations,
    caller: &Caller,
    id: &str,
    now: OffsetDateTime,
) -> Result<InvitationRecord, InvitationError> {
    let invitation = manageable(store, caller, id).await?;
    let token = fresh_token()?;
    let expires_at = (now + invitations.ttl).unix_timestamp();
    let reissued = store
        .fenced(caller.fence())
        .reissue_invitation(&invitation, &token.digest(), expires_at)
        .await?
        .ok_or(InvitationError::NotFound)?;
    tracing::info!(invitation_id = %reissued.id, by = %caller.user_id, "invitation reissued");
    Ok(deliver(store, caller.fence(), &invitations.mail, reissued, &token).await)
}

/// Accepts the invitation `token` names, with the invitee's chosen `password`: the user is
/// created in the inviting home with the invited roles, its address claimed, and the
/// invitation used up, all in one write. Refused: a token that accepts nothing (`NotFound`),
/// an expired one, a password the policy refuses (`password`), an address that is taken.
pub async fn accept(
    store: &Store,
    token: &InvitationToken,
    password: String,
    now: OffsetDateTime,
) -> Result<UserRecord, InvitationError> {
    // Looked up before any hashing, so a wrong token costs one read, not an argon2 run.
    let invitation = store.invitation_by_token(&token.digest()).await?.ok_or(InvitationError::NotFound)?;
    if invitation.expired(now) {
        return Err(InvitationError::Expired);
    }
    check_password(&password, &invitation.email)?;
    let password_hash = hash_new_password(password).await.map_err(InvitationError::Unexpected)?;
    let account = NewAccount {
        email: invitation.email.clone(),
        roles: invitation.roles.clone(),
        tenant_id: invitation.tenant_id,
        partner_id: invitation.partner_id.clone(),
    };
    let user = user_record(account, password_hash, now);
    match store.accept_invitation(&invitation, &user, now).await? {
        Acceptance::Accepted => {}
        // The write checks expiry at the same `now` as above, so what happened meanwhile is
        // another acceptance, a revocation or a resend.
        Acceptance::Gone => return Err(InvitationError::NotFound),
        Acceptance::EmailTaken => return Err(InvitationError::EmailTaken),
    }
    tracing::info!(user_id = %user.id, invitation_id = %invitation.id, "invitation accepted");
    Ok(user)
}
