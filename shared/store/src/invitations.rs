//! Invitations: a user to be, waiting in the partition of the home it invites into (so a
//! tenant's invitations sit under `TENANT#<id>` like its users) until the invitee sets a
//! password. The token that accepts it is kept only as its digest, in an item of its own
//! (`INVITATION_TOKEN#<digest>`) pointing at the invitation, so accepting needs nothing but
//! the token. The e-mail address is claimed only when the invitation is accepted: inviting
//! reads nothing about the address, so it cannot tell anyone whether it is taken.

use aws_sdk_dynamodb::types::AttributeValue;
use dotmac_domain::{Email, PartnerId, RoleName, TenantId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::dynamo::{Attributes, Cancelled, Expr, ITEM_EXISTS, Item, Query, Read, decode_cursor};
use crate::keys::{EXPIRES_AT, INVITATION_SK_PREFIX, ItemKey, SK, Stored, invitation_lookup_pk, n, s};
use crate::tenants::Page;
use crate::users::{UserHome, UserRecord};
use crate::{Store, StoreError};

/// What became of an invitation's e-mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Recorded, not yet handed to SES (or the sender stopped before SES answered).
    Pending,
    /// SES took the e-mail.
    Sent,
    /// SES refused it or could not be reached; a resend issues a new link.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationRecord {
    pub id: String,
    pub email: Email,
    pub roles: Vec<RoleName>,
    pub tenant_id: Option<TenantId>,
    #[serde(default)]
    pub partner_id: Option<PartnerId>,
    /// The user who invited.
    pub invited_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Epoch seconds, under DynamoDB's TTL attribute name: the table drops the invitation
    /// some time after it expires.
    pub expires_at: i64,
    /// SHA-256 of the current token (base64url).
    pub token_digest: String,
    pub delivery: Delivery,
}

impl InvitationRecord {
    pub fn home(&self) -> UserHome {
        UserHome::of(self.tenant_id, self.partner_id.as_ref())
    }

    pub fn expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at <= now.unix_timestamp()
    }
}

/// How an acceptance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// The user exists, the address is claimed, the invitation and its token are gone.
    Accepted,
    /// Between reading and accepting, the invitation was accepted, revoked, reissued or
    /// expired: nothing was written.
    Gone,
    /// The address belongs to another account: nothing was written, the invitation stays.
    EmailTaken,
}

type InvitationItem = Stored<InvitationRecord>;

/// The token item's attributes: the invitation it accepts, and the partition it sits in.
const TOKEN_INVITATION_ID: &str = "invitation_id";
const TOKEN_HOME: &str = "home";

fn invitation_key(invitation: &InvitationRecord) -> ItemKey {
    ItemKey::invitation(invitation.home().pk(), &invitation.id)
}

/// The invitation's item, in its home; GSI1 lets platform staff find it by id alone.
fn invitation_item(invitation: &InvitationRecord) -> Result<Item, StoreError> {
    let stored = Stored::new(invitation_key(invitation), "invitation", invitation);
    stored.indexed(invitation_lookup_pk(&invitation.id), "INVITATION").to_item()
}

fn token_item(invitation: &InvitationRecord) -> Item {
    let mut item = ItemKey::invitation_token(&invitation.token_digest).into_item();
    item.extend([
        ("entity".to_owned(), s("invitation_token")),
        (TOKEN_INVITATION_ID.to_owned(), s(&invitation.id)),
        (TOKEN_HOME.to_owned(), s(invitation.home().pk())),
        (EXPIRES_AT.to_owned(), n(invitation.expires_at)),
    ]);
    item
}

/// The condition of deleting an invitation's token item: it is this invitation's, or already
/// gone (TTL deletes the token and the invitation independently).
fn token_of(invitation: &InvitationRecord) -> Expr {
    Expr::new(format!("attribute_not_exists(PK) OR {TOKEN_INVITATION_ID} = :invitation"))
        .value(":invitation", s(&invitation.id))
}

fn delivery_value(delivery: Delivery) -> Result<AttributeValue, StoreError> {
    Ok(serde_dynamo::to_attribute_value(delivery)?)
}

/// The start of the page after the invitation a cursor names (its sort key, `SK`).
fn invitations_after(home: &UserHome, cursor: &str) -> Result<Item, StoreError> {
    let sk = decode_cursor(cursor)?;
    let id = sk.strip_prefix(INVITATION_SK_PREFIX).ok_or(StoreError::BadCursor)?;
    Ok(ItemKey::invitation(home.pk(), id).into_item())
}

/// The outcome of a transaction whose first step is the invitation's own: refused there
/// means the invitation is gone or changed (`None`); any other refusal is an error.
fn settled(outcome: Result<(), Cancelled>) -> Result<Option<()>, StoreError> {
    match outcome {
        Ok(()) => Ok(Some(())),
        Err(cancelled) if cancelled.refused(0) => Ok(None),
        Err(cancelled) => Err(cancelled.into()),
    }
}

impl Store {
    /// Records an invitation and its token item together (`AlreadyExists` if either key is
    /// taken).
    pub async fn create_invitation(&self, invitation: &InvitationRecord) -> Result<(), StoreError> {
        let steps = vec![self.put_new(invitation_item(invitation)?)?, self.put_new(token_item(invitation))?];
        self.transact(steps).await?.map_err(|_| StoreError::AlreadyExists)
    }

    pub async fn get_invitation(
        &self,
        home: &UserHome,
        id: &str,
    ) -> Result<Option<InvitationRecord>, StoreError> {
        Ok(self.get_item::<InvitationItem>(ItemKey::invitation(home.pk(), id)).await?.map(|item| item.record))
    }

    /// Where an invitation lives, by id alone (for platform staff). Only the home is taken
    /// from the index, whose copy may lag: callers read the invitation itself from its home.
    pub async fn find_invitation_home(&self, id: &str) -> Result<Option<UserHome>, StoreError> {
        self.home_by_lookup(invitation_lookup_pk(id), InvitationRecord::home).await
    }

    /// The invitation a token's digest accepts, read strongly consistent (an invitee may
    /// follow the link the moment it arrives). `None` for a token that was never issued, or
    /// was used, revoked or replaced.
    pub async fn invitation_by_token(&self, digest: &str) -> Result<Option<InvitationRecord>, StoreError> {
        let Some(token) = self.read_item(ItemKey::invitation_token(digest), Read::Consistent, None).await?
        else {
            return Ok(None);
        };
        let (id, home) = (token.string(TOKEN_INVITATION_ID)?, token.string(TOKEN_HOME)?);
        let invitation = self.get_item::<InvitationItem>(ItemKey::invitation(home, &id)).await?;
        // A token item outlives its invitation only until TTL takes it too.
        Ok(invitation.map(|item| item.record).filter(|invitation| invitation.token_digest == digest))
    }

    /// The pending invitations of one home (neither accepted, revoked nor expired), in id
    /// order (ids are time-ordered), `limit` at a time.
    pub async fn list_invitations(
        &self,
        home: &UserHome,
        limit: i32,
        cursor: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Page<InvitationRecord>, StoreError> {
        let start = cursor.map(|cursor| invitations_after(home, cursor)).transpose()?;
        let key = Expr::new("PK = :pk AND begins_with(SK, :invitations)")
            .value(":pk", s(home.pk()))
            .value(":invitations", s(INVITATION_SK_PREFIX));
        // TTL deletion lags (and emulators never run it), so expiry is filtered here too.
        let pending = Expr::new("expires_at > :now").value(":now", n(now.unix_timestamp()));
        let query = Query::table(key).filter(Some(pending)).limit(limit).start(start);
        self.page(query, SK, |item: InvitationItem| item.record).await
    }

    /// Records what became of the invitation's e-mail, unless the invitation has since been
    /// accepted, revoked or reissued (a newer link's e-mail has a status of its own).
    pub async fn set_invitation_delivery(
        &self,
        invitation: &InvitationRecord,
        delivery: Delivery,
    ) -> Result<(), StoreError> {
        let set = Expr::new("SET #delivery = :delivery")
            .name("#delivery", "delivery")
            .value(":delivery", delivery_value(delivery)?);
        let same_link = Expr::new("token_digest = :digest").value(":digest", s(&invitation.token_digest));
        // Refused: accepted, revoked or reissued meanwhile; there is nothing left to record.
        let _moved_on = self.update(invitation_key(invitation), set, Some(same_link), None).await?;
        Ok(())
    }

    /// Gives the invitation a new token and expiry (its delivery back to pending): the old
    /// link stops working in the same write. `None` when the invitation was accepted, revoked
    /// or reissued since it was read.
    pub async fn reissue_invitation(
        &self,
        invitation: &InvitationRecord,
        token_digest: &str,
        expires_at: i64,
    ) -> Result<Option<InvitationRecord>, StoreError> {
        let reissued = InvitationRecord {
            token_digest: token_digest.to_owned(),
            expires_at,
            delivery: Delivery::Pending,
            ..invitation.clone()
        };
        let update = Expr::new("SET token_digest = :new, expires_at = :expires, #delivery = :pending")
            .name("#delivery", "delivery")
            .value(":new", s(token_digest))
            .value(":expires", n(expires_at))
            .value(":pending", delivery_value(Delivery::Pending)?);
        let unchanged = Expr::new("token_digest = :old").value(":old", s(&invitation.token_digest));
        let steps = vec![
            self.update_step(invitation_key(invitation), update, unchanged)?,
            self.delete_step(ItemKey::invitation_token(&invitation.token_digest), token_of(invitation))?,
            self.put_new(token_item(&reissued))?,
        ];
        Ok(settled(self.transact(steps).await?)?.map(|()| reissued))
    }

    /// Withdraws an invitation and its link. `false` when it was already gone (accepted or
    /// revoked meanwhile). A token issued by a reissue that raced this is left without an
    /// invitation, so it accepts nothing (`invitation_by_token`), until TTL takes it.
    pub async fn revoke_invitation(&self, invitation: &InvitationRecord) -> Result<bool, StoreError> {
        let steps = vec![
            self.delete_step(invitation_key(invitation), Expr::new(ITEM_EXISTS))?,
            self.delete_step(ItemKey::invitation_token(&invitation.token_digest), token_of(invitation))?,
        ];
        Ok(settled(self.transact(steps).await?)?.is_some())
    }

    /// Accepts an invitation as one transaction: the token and the invitation are consumed
    /// (both still there, unexpired at `now`, and this token the invitation's current one),
    /// and `user` is created with its e-mail claimed. So neither a crash nor a race leaves a
    /// claimed address without its user, or lets an invitation be used twice.
    pub async fn accept_invitation(
        &self,
        invitation: &InvitationRecord,
        user: &UserRecord,
        now: OffsetDateTime,
    ) -> Result<Acceptance, StoreError> {
        let now = n(now.unix_timestamp());
        let token_live = Expr::new(format!(
            "attribute_exists(PK) AND {TOKEN_INVITATION_ID} = :invitation AND expires_at > :now"
        ))
        .value(":invitation", s(&invitation.id))
        .value(":now", now.clone());
        let invitation_live = Expr::new("token_digest = :digest AND expires_at > :now")
            .value(":digest", s(&invitation.token_digest))
            .value(":now", now);
        let mut steps = vec![
            self.delete_step(ItemKey::invitation_token(&invitation.token_digest), token_live)?,
            self.delete_step(invitation_key(invitation), invitation_live)?,
        ];
        // Then the user (step 2) and its e-mail claim (step 3).
        steps.extend(self.user_creation_steps(user)?);
        match self.transact(steps).await? {
            Ok(()) => Ok(Acceptance::Accepted),
            Err(cancelled) if cancelled.refused(0) || cancelled.refused(1) => Ok(Acceptance::Gone),
            Err(cancelled) if cancelled.refused(3) => Ok(Acceptance::EmailTaken),
            Err(cancelled) => Err(cancelled.into()),
        }
    }
}
