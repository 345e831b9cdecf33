//! `/v1/invitations`: invite, list the pending ones, resend, revoke, and the public accept.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use dotmac_domain::{Action, Resource, authorize};
use dotmac_http::error::ErrorEnvelope;
use dotmac_http::idempotency::IdempotencyKeyHeader;
use dotmac_http::schema;
use dotmac_http::{
    ApiError, Authenticated, ErrorCode, Idempotent, Json, Page, Path, idempotent, request_fingerprint,
};
use dotmac_tokens::{INVITATION_TOKEN_LENGTH, InvitationToken};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::invite::{InvitationError, accept, invite, resend, revoke};
use crate::users::{assignment_refused, home_target, new_account};
use crate::views::{InvitationView, UserView};
use crate::{ScopeQuery, UsersState};

impl From<InvitationError> for ApiError {
    fn from(error: InvitationError) -> Self {
        match error {
            InvitationError::Denied(denied) => denied.into(),
            InvitationError::Assignment(refused) => assignment_refused(refused),
            InvitationError::Invalid(invalid) => invalid.into(),
            InvitationError::NotFound => ApiError::new(
                ErrorCode::InvitationNotFound,
                "no such invitation: it was used, revoked or replaced by a newer link, or never existed",
            ),
            InvitationError::Expired => ApiError::new(
                ErrorCode::InvitationExpired,
                "this invitation has expired; ask whoever invited you to send it again",
            ),
            InvitationError::BeyondCaller => ApiError::new(
                ErrorCode::Forbidden,
                "this invitation gives roles beyond yours; you cannot resend or revoke it",
            ),
            // Only the invitee, who holds the token, ever gets this answer.
            InvitationError::EmailTaken => {
                ApiError::new(ErrorCode::AlreadyExists, "this e-mail address already belongs to an account")
                    .with_details(json!({ "field": "email" }))
            }
            InvitationError::Store(error) => error.into(),
            InvitationError::Unexpected(cause) => ApiError::internal(cause),
        }
    }
}

/// Only these fields: the invitation's token, expiry and the like are the platform's to set.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InviteRequest {
    /// Where the invitation goes, and the address the account will sign in with.
    #[schema(schema_with = schema::email)]
    email: String,
    /// Built-in or the tenant's custom roles, 1 to 10, that the account gets on acceptance.
    #[schema(min_items = 1, max_items = 10)]
    roles: Vec<String>,
    /// Platform staff name the tenant (or partner) invited into; others invite into their
    /// own and may leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::partner_id)]
    partner_id: Option<String>,
}

/// Invite someone: the account (e-mail, roles, home) is created only when the invitee sets a
/// password through the e-mailed link. The answer is the same whether or not the address
/// belongs to an account anywhere.
#[utoipa::path(
    post,
    path = "/v1/invitations",
    tag = "invitations",
    operation_id = "invite_user",
    params(IdempotencyKeyHeader),
    request_body = InviteRequest,
    responses(
        (status = 202, description = "The invitation, recorded; `delivery` says whether SES took the e-mail (`failed`: resend)", body = InvitationView),
        (status = 409, description = "`REQUEST_IN_PROGRESS`", body = ErrorEnvelope),
        (status = 422, description = "`VALIDATION_FAILED` (e-mail, unknown role, ...) or `IDEMPOTENCY_KEY_REUSED`", body = ErrorEnvelope),
    )
)]
pub(crate) async fn create(
    State(state): State<UsersState>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    Json(request): Json<InviteRequest>,
) -> Result<Idempotent<InvitationView>, ApiError> {
    let account = new_account(
        &caller,
        &request.email,
        &request.roles,
        request.tenant_id.as_deref(),
        request.partner_id.as_deref(),
    )?;
    let canonical = serde_json::to_vec(&request).map_err(ApiError::internal)?;
    let fingerprint = request_fingerprint("POST", "/v1/invitations", &canonical);
    let scope = format!("invitations#{}", caller.user_id);
    idempotent(&state.store, &scope, &headers, &fingerprint, || async {
        let invitation =
            invite(&state.store, &state.invitations, &caller, account, OffsetDateTime::now_utc()).await?;
        Ok((StatusCode::ACCEPTED, InvitationView::of(&invitation)))
    })
    .await
}

/// Pending invitations (neither accepted, revoked nor expired) of one tenant (or partner),
/// a page at a time.
#[utoipa::path(
    get,
    path = "/v1/invitations",
    tag = "invitations",
    operation_id = "list_invitations",
    params(ScopeQuery),
    responses((status = 200, description = "One page", body = Page<InvitationView>))
)]
pub(crate) async fn list(
    State(state): State<UsersState>,
    Authenticated(caller): Authenticated,
    query: ScopeQuery,
) -> Result<axum::Json<Page<InvitationView>>, ApiError> {
    let home = query.home(&caller)?;
    authorize(&caller, Resource::User, Action::Read, home_target(&home))?;
    let page = state
        .store
        .fenced(caller.fence())
        .list_invitations(&home, query.limit()?, query.cursor.as_deref(), OffsetDateTime::now_utc())
        .await?;
    Ok(axum::Json(Page::new(page.items.iter().map(InvitationView::of).collect(), page.next_cursor)))
}

/// An invitation's id, as the path carries it.
fn invitation_id(raw: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(raw)
        .map(|id| id.to_string())
        .map_err(|_| ApiError::invalid_field("invitation_id", "must be an invitation id (UUID)"))
}

/// Withdraw an invitation: its link stops working at once.
#[utoipa::path(
    delete,
    path = "/v1/invitations/{invitation_id}",
    tag = "invitations",
    operation_id = "revoke_invitation",
    params(("invitation_id" = String, Path, format = Uuid, description = "The invitation's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "`INVITATION_NOT_FOUND`: none pending where the caller can see", body = ErrorEnvelope),
    )
)]
pub(crate) async fn delete(
    State(state): State<UsersState>,
    Authenticated(caller): Authenticated,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    revoke(&state.store, &caller, &invitation_id(&raw)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send an invitation again, with a new link and a new expiry: the previous link stops
/// working (the platform keeps no link it could send twice). For an e-mail that failed or
/// was lost.
#[utoipa::path(
    post,
    path = "/v1/invitations/{invitation_id}/resend",
    tag = "invitations",
    operation_id = "resend_invitation",
    params(("invitation_id" = String, Path, format = Uuid, description = "The invitation's id")),
    responses(
        (status = 202, description = "The invitation with its new expiry; `delivery` as for a new one", body = InvitationView),
        (status = 404, description = "`INVITATION_NOT_FOUND`: none pending where the caller can see", body = ErrorEnvelope),
    )
)]
pub(crate) async fn send_again(
    State(state): State<UsersState>,
    Authenticated(caller): Authenticated,
    Path(raw): Path<String>,
) -> Result<(StatusCode, axum::Json<InvitationView>), ApiError> {
    let id = invitation_id(&raw)?;
    let invitation =
        resend(&state.store, &state.invitations, &caller, &id, OffsetDateTime::now_utc()).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(InvitationView::of(&invitation))))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AcceptInvitationRequest {
    /// The token from the invitation's link (after `#token=`).
    #[schema(pattern = "^[A-Za-z0-9_-]{43}$", min_length = 43, max_length = 43)]
    token: String,
    /// The password to sign in with: 12–128 characters, not the e-mail, not built from
    /// breached words, no repeats or runs (the policy's refusals are 422s naming `password`).
    #[schema(format = Password, min_length = 12, max_length = 128)]
    password: String,
}

/// Accept an invitation (public: the token is the credential). Creates the account the
/// invitation describes, with the password given, and uses the invitation up.
#[utoipa::path(
    post,
    path = "/v1/invitations/accept",
    tag = "invitations",
    operation_id = "accept_invitation",
    params(IdempotencyKeyHeader),
    request_body = AcceptInvitationRequest,
    responses(
        (status = 201, description = "The new account; sign in with its e-mail and the password", body = UserView),
        (status = 404, description = "`INVITATION_NOT_FOUND`: the token was never issued, or was used, revoked or replaced", body = ErrorEnvelope),
        (status = 409, description = "`ALREADY_EXISTS`: the address belongs to an account by now; or `REQUEST_IN_PROGRESS`", body = ErrorEnvelope),
        (status = 410, description = "`INVITATION_EXPIRED`", body = ErrorEnvelope),
        (status = 422, description = "`VALIDATION_FAILED` (the token's shape, the password policy) or `IDEMPOTENCY_KEY_REUSED`", body = ErrorEnvelope),
    )
)]
pub(crate) async fn accept_invitation(
    State(state): State<UsersState>,
    headers: HeaderMap,
    Json(request): Json<AcceptInvitationRequest>,
) -> Result<Idempotent<UserView>, ApiError> {
    let token = InvitationToken::parse(&request.token).ok_or_else(|| {
        ApiError::invalid_field(
            "token",
            format!("must be the {INVITATION_TOKEN_LENGTH} characters of the invitation's link"),
        )
    })?;
    // Keyed by the token, which only its holder has; the password stays out of the record.
    let scope = format!("invitation#{}", token.digest());
    let fingerprint = request_fingerprint("POST", "/v1/invitations/accept", token.digest().as_bytes());
    idempotent(&state.store, &scope, &headers, &fingerprint, || async {
        let user = accept(&state.store, &token, request.password, OffsetDateTime::now_utc()).await?;
        Ok((StatusCode::CREATED, UserView::of(&user)))
    })
    .await
}
