//! The bearer extractors: who is calling, from the `Authorization: Bearer` access token
//! (signature and claims by `dotmac_tokens`, then the deny-list), and the one check the
//! Lambda authorizer shares with the functions.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use dotmac_domain::Caller;
use dotmac_store::Store;
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

/// The caller of a request, resolved from its `Authorization: Bearer` access token.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Caller);

/// Like `Authenticated`, with the token's claims (for sign-out and "who am I").
#[derive(Debug, Clone)]
pub struct SignedIn(pub Claims);

/// Verifies the bearer token and that it has not been signed out. Fails closed: if the
/// deny-list cannot be read, the request is refused.
async fn authenticate(parts: &Parts, keys: &JwtKeys, store: &Store) -> Result<Claims, ApiError> {
    check_bearer(parts.headers.get(AUTHORIZATION).map(|v| v.to_str().unwrap_or_default()), keys, store).await
}

/// The one check of an `Authorization` header's access token, shared by the functions'
/// extractors and API Gateway's Lambda authorizer: signature and claims, then the
/// deny-list (failing closed if it cannot be read).
pub async fn check_bearer(header: Option<&str>, keys: &JwtKeys, store: &Store) -> Result<Claims, ApiError> {
    let header = header
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "send an Authorization: Bearer token"))?;
    let token = Some(header)
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(ErrorCode::Unauthenticated, "the Authorization header must be Bearer <token>")
        })?;
    let invalid = || ApiError::new(ErrorCode::InvalidToken, "the access token is invalid or expired");
    let claims = keys.verify(token, TokenKind::Access).map_err(|error| {
        tracing::info!(%error, "bearer token refused");
        invalid()
    })?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    if store.is_token_denied(&claims.jti, now).await.map_err(ApiError::from)? {
        tracing::info!(jti = %claims.jti, "signed-out token refused");
        return Err(invalid());
    }
    Ok(claims)
}

/// Adds what the caller's custom roles grant, as its tenant defines them now (a role's
/// change applies to the next request, not the next sign-in). Read through the caller's own
/// fence, so a token naming roles can never load another tenant's.
pub async fn resolve_caller(store: &Store, mut caller: Caller) -> Result<Caller, ApiError> {
    let Some(tenant) = caller.tenant_id else { return Ok(caller) };
    if caller.custom_roles().next().is_none() {
        return Ok(caller);
    }
    let defined = store.fenced(dotmac_domain::Fence::Tenant(tenant)).list_roles(tenant).await?;
    caller.custom_permissions = defined
        .into_iter()
        .filter(|record| caller.roles.contains(&record.role.name))
        .flat_map(|record| record.role.permissions)
        .collect();
    Ok(caller)
}

impl<S> FromRequestParts<S> for Authenticated
where
    Arc<JwtKeys>: FromRef<S>,
    Store: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let SignedIn(claims) = SignedIn::from_request_parts(parts, state).await?;
        let caller = resolve_caller(&Store::from_ref(state), claims.caller()).await?;
        Ok(Authenticated(caller))
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
        authenticate(parts, &Arc::<JwtKeys>::from_ref(state), &Store::from_ref(state)).await.map(SignedIn)
    }
}
