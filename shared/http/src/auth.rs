//! The bearer extractors: who is calling, from the `Authorization: Bearer` access token.
//! The token is verified (signature and claims, by `dotmac_tokens`), then admitted: one
//! strongly consistent read of its deny entry, its session, its user and the custom roles it
//! names (`dotmac_store::admission`), which ends it the moment it is signed out, its session
//! ends or its user is deactivated, deleted or has its roles changed. The Lambda authorizer
//! runs the very same check.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use dotmac_domain::{Action, Caller, Resource, Role, Target, Tenant, TenantId, authorize};
use dotmac_store::{
    Admission, Also, Fenced, InvoiceRecord, Presented, SessionOf, SessionRefusal, Store, UserHome,
    parse_invoice_id,
};
use dotmac_tokens::{Claims, JwtKeys, TokenKind};
use std::sync::Arc;
use time::OffsetDateTime;

use crate::error::{ApiError, ErrorCode};

/// Lets the bearer extractors find the keys and the store in a function's state (a struct
/// with `keys: Arc<JwtKeys>` and `store: Store` fields).
#[macro_export]
macro_rules! bearer_state {
    ($state:ty) => {
        impl ::axum::extract::FromRef<$state> for ::std::sync::Arc<::dotmac_tokens::JwtKeys> {
            fn from_ref(state: &$state) -> Self {
                state.keys.clone()
            }
        }

        impl ::axum::extract::FromRef<$state> for ::dotmac_store::Store {
            fn from_ref(state: &$state) -> Self {
                state.store.clone()
            }
        }
    };
}

/// The caller of a request, resolved from its admitted access token.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Caller);

/// Like `Authenticated`, with the token's claims (for sign-out and "who am I").
#[derive(Debug, Clone)]
pub struct SignedIn(pub Claims);

/// A verified but not yet admitted token: for a route that reads one object and wants it
/// fetched in the admission's round trip (`admit`). The only way to a caller is `admit`.
#[derive(Debug)]
pub struct Bearer {
    claims: Claims,
}

/// What `Bearer::admit` lets in: the caller, and the object asked for (when it exists
/// within the caller's reach).
#[derive(Debug)]
pub struct Admitted {
    pub caller: Caller,
    pub claims: Claims,
    pub tenant: Option<Tenant>,
}

/// The tenant `found` (read through the caller's fence, e.g. by `Bearer::admit`), if the
/// caller may `Read` it as `resource`: its own, one its partner brought, or any for platform
/// staff. Anyone but a partner is refused before learning whether it exists.
pub fn tenant_in_reach(
    caller: &Caller,
    resource: Resource,
    id: TenantId,
    found: Option<Tenant>,
) -> Result<Tenant, ApiError> {
    let direct = authorize(caller, resource, Action::Read, Target::tenant(id));
    if let (Err(denied), None) = (&direct, &caller.partner_id) {
        return Err(denied.clone().into());
    }
    let tenant =
        found.ok_or_else(|| ApiError::new(ErrorCode::TenantNotFound, "no such tenant where you can see"))?;
    authorize(caller, resource, Action::Read, Target::tenant(id).partner(tenant.partner_id.as_ref()))?;
    Ok(tenant)
}

/// An invoice a caller may read, with the fenced store its other records are read through.
pub struct ReadableInvoice<'s> {
    pub caller: Caller,
    pub fenced: Fenced<'s>,
    pub tenant: Tenant,
    pub invoice: InvoiceRecord,
}

/// The invoice a path's id names, if the caller may read its tenant's invoices: `not_found`
/// whether it does not exist or is out of reach, after refusing a caller who may read no
/// invoices at all (so a malformed id teaches nothing a real one would not).
pub async fn readable_invoice<'s>(
    store: &'s Store,
    bearer: Bearer,
    id: &str,
    not_found: impl Fn() -> ApiError,
) -> Result<ReadableInvoice<'s>, ApiError> {
    let parsed = parse_invoice_id(id);
    let admitted = bearer.admit(store, parsed.map(|(tenant, _)| Also::Tenant(tenant))).await?;
    let Some((tenant_id, period)) = parsed else {
        if !admitted.caller.has_global_scope() {
            authorize(&admitted.caller, Resource::Invoice, Action::Read, Target::default())?;
        }
        return Err(not_found());
    };
    let tenant = tenant_in_reach(&admitted.caller, Resource::Invoice, tenant_id, admitted.tenant)
        .map_err(|e| if e.code == ErrorCode::TenantNotFound { not_found() } else { e })?;
    let fenced = store.fenced(admitted.caller.fence());
    let invoice = fenced.get_invoice(&tenant, period).await?.ok_or_else(&not_found)?;
    Ok(ReadableInvoice { caller: admitted.caller, fenced, tenant, invoice })
}

impl Bearer {
    pub async fn admit(self, store: &Store, also: Option<Also>) -> Result<Admitted, ApiError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let (caller, admission) = admit(store, &self.claims, also, now).await?;
        Ok(Admitted { caller, claims: self.claims, tenant: admission.tenant })
    }
}

/// Checks an `Authorization` header's access token: signature and claims only (no I/O).
pub fn verify_bearer(header: Option<&str>, keys: &JwtKeys) -> Result<Claims, ApiError> {
    let header = header
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "send an Authorization: Bearer token"))?;
    let token = Some(header)
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(ErrorCode::Unauthenticated, "the Authorization header must be Bearer <token>")
        })?;
    keys.verify(token, TokenKind::Access).map_err(|error| {
        tracing::info!(%error, "bearer token refused");
        ApiError::new(ErrorCode::InvalidToken, "the access token is invalid or expired")
    })
}

/// The one check of an `Authorization` header's access token, shared by the functions'
/// extractors and API Gateway's Lambda authorizer: verified, then admitted (failing closed
/// if the store cannot be read).
pub async fn check_bearer(header: Option<&str>, keys: &JwtKeys, store: &Store) -> Result<Claims, ApiError> {
    let claims = verify_bearer(header, keys)?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    admit(store, &claims, None, now).await?;
    Ok(claims)
}

/// A token without a session must be a tenant container's machine token; a person's token
/// always names its session.
fn is_machine_token(claims: &Claims) -> bool {
    claims.sub.starts_with("machine:")
        && claims.roles.iter().map(|r| r.builtin()).eq([Some(Role::TenantMachine)])
}

/// Reads and decides, in one round trip, whether `claims` may act now, and with which
/// custom permissions.
async fn admit(
    store: &Store,
    claims: &Claims,
    also: Option<Also>,
    now: i64,
) -> Result<(Caller, Admission), ApiError> {
    let mut caller = claims.caller();
    let session = match &claims.fam {
        Some(family) => Some(SessionOf {
            family,
            home: UserHome::of(claims.tid, claims.pid.as_ref()),
            user_id: &claims.sub,
        }),
        None if is_machine_token(claims) => None,
        None => return Err(refused(SessionRefusal::Unknown)),
    };
    let custom: Vec<_> = caller.custom_roles().collect();
    let presented = Presented {
        jti: &claims.jti,
        session,
        custom_roles: caller.tenant_id.filter(|_| !custom.is_empty()).map(|tenant| (tenant, custom)),
    };
    let admission = store.fenced(caller.fence()).admission(&presented, also, now).await?;
    if let Some(refusal) = admission.refusal {
        tracing::info!(jti = %claims.jti, %refusal, "access token refused");
        return Err(refused(refusal));
    }
    // A custom role grants what its tenant defines now, and only while its holder still
    // holds it and it is not being deleted.
    let held = admission.user.as_ref().map(|user| user.roles.as_slice()).unwrap_or_default();
    caller.custom_permissions = admission
        .roles
        .iter()
        .filter(|record| !record.retiring && held.contains(&record.role.name))
        .flat_map(|record| record.role.permissions.iter().copied())
        .collect();
    Ok((caller, admission))
}

fn refused(refusal: SessionRefusal) -> ApiError {
    ApiError::new(ErrorCode::InvalidToken, format!("the access token is no longer good: {refusal}"))
}

async fn admitted_claims<S>(parts: &Parts, state: &S) -> Result<(Caller, Claims), ApiError>
where
    Arc<JwtKeys>: FromRef<S>,
    Store: FromRef<S>,
{
    let bearer = Bearer::from_parts(parts, &Arc::<JwtKeys>::from_ref(state))?;
    let admitted = bearer.admit(&Store::from_ref(state), None).await?;
    Ok((admitted.caller, admitted.claims))
}

impl Bearer {
    fn from_parts(parts: &Parts, keys: &JwtKeys) -> Result<Bearer, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).map(|v| v.to_str().unwrap_or_default());
        verify_bearer(header, keys).map(|claims| Bearer { claims })
    }
}

impl<S> FromRequestParts<S> for Bearer
where
    Arc<JwtKeys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Bearer::from_parts(parts, &Arc::<JwtKeys>::from_ref(state))
    }
}

impl<S> FromRequestParts<S> for Authenticated
where
    Arc<JwtKeys>: FromRef<S>,
    Store: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        admitted_claims(parts, state).await.map(|(caller, _)| Authenticated(caller))
    }
}

impl<S> FromRequestParts<S> for SignedIn
where
    Arc<JwtKeys>: FromRef<S>,
    Store: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        admitted_claims(parts, state).await.map(|(_, claims)| SignedIn(claims))
    }
}
