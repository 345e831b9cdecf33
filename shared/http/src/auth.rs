//! Bearer tokens: EdDSA-signed JWTs with a `kid`, a pinned algorithm and `iss`/`aud`/`exp`/
//! `nbf`/`typ` all checked (RFC 8725). Access and refresh tokens carry different `typ`s, so
//! one never passes for the other.

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use dotmac_config::JwtSettings;
use dotmac_domain::{Caller, Role, TenantId};
use dotmac_store::Store;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use time::OffsetDateTime;

use crate::error::{ApiError, ErrorCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenKind {
    /// RFC 9068's media type for access tokens.
    #[serde(rename = "at+jwt")]
    Access,
    #[serde(rename = "refresh+jwt")]
    Refresh,
}

impl TokenKind {
    fn header_typ(self) -> &'static str {
        match self {
            TokenKind::Access => "at+jwt",
            TokenKind::Refresh => "refresh+jwt",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    pub typ: TokenKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<TenantId>,
    /// The sign-in session (refresh-token family) the token belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fam: Option<String>,
    #[serde(default)]
    pub roles: Vec<Role>,
}

impl Claims {
    pub fn caller(&self) -> Caller {
        Caller { user_id: self.sub.clone(), tenant_id: self.tid, roles: self.roles.clone() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
}

/// A freshly issued pair and what the session store needs to know of its refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub pair: TokenPair,
    pub refresh_jti: String,
    pub refresh_expires_at: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("no signing key configured")]
    NoSigningKey,
    #[error("the signing key is not a base64 PKCS#8 Ed25519 key")]
    BadSigningKey,
    #[error("token rejected: {0}")]
    Rejected(String),
    #[error("token could not be signed: {0}")]
    Signing(String),
}

/// The platform's signing key and the rules tokens are checked against. Built once at cold
/// start and shared.
pub struct JwtKeys {
    kid: String,
    /// The raw 32-byte Ed25519 public key, published in the JWKS.
    public_key: Vec<u8>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
    audience: String,
    access_ttl_seconds: u64,
    refresh_ttl_seconds: u64,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// A new Ed25519 key as base64 PKCS#8, the form `DOTMAC_JWT_SIGNING_KEY` takes.
pub fn generate_signing_key() -> Result<String, TokenError> {
    let document =
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| TokenError::BadSigningKey)?;
    Ok(STANDARD.encode(document.as_ref()))
}

impl JwtKeys {
    pub fn from_settings(settings: &JwtSettings) -> Result<Self, TokenError> {
        let encoded = settings.signing_key.as_deref().ok_or(TokenError::NoSigningKey)?;
        let pkcs8 = STANDARD.decode(encoded.trim()).map_err(|_| TokenError::BadSigningKey)?;
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| TokenError::BadSigningKey)?;
        let public = pair.public_key().as_ref().to_vec();
        let kid = URL_SAFE_NO_PAD.encode(&digest::digest(&digest::SHA256, &public).as_ref()[..12]);
        Ok(Self {
            kid,
            public_key: public.clone(),
            encoding: EncodingKey::from_ed_der(&pkcs8),
            decoding: DecodingKey::from_ed_der(&public),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            access_ttl_seconds: settings.access_ttl_seconds,
            refresh_ttl_seconds: settings.refresh_ttl_seconds,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JSON Web Key Set (RFC 7517, OKP keys per RFC 8037), so any JWT
    /// library can verify our tokens.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(&self.public_key),
                "kid": self.kid,
                "alg": "EdDSA",
                "use": "sig",
            }]
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    fn sign(
        &self,
        caller: &Caller,
        family: &str,
        kind: TokenKind,
        ttl: u64,
        now: OffsetDateTime,
    ) -> Result<(String, Claims), TokenError> {
        let iat = now.unix_timestamp();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: caller.user_id.clone(),
            exp: iat + i64::try_from(ttl).unwrap_or(i64::MAX / 2),
            nbf: iat,
            iat,
            jti: uuid::Uuid::new_v4().to_string(),
            typ: kind,
            tid: caller.tenant_id,
            fam: Some(family.to_owned()),
            roles: caller.roles.clone(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some(kind.header_typ().to_owned());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))?;
        Ok((token, claims))
    }

    /// An access and a refresh token for `caller`, both in the sign-in session `family`.
    pub fn issue(&self, caller: &Caller, family: &str, now: OffsetDateTime) -> Result<Issued, TokenError> {
        let (access_token, _) = self.sign(caller, family, TokenKind::Access, self.access_ttl_seconds, now)?;
        let (refresh_token, refresh) =
            self.sign(caller, family, TokenKind::Refresh, self.refresh_ttl_seconds, now)?;
        Ok(Issued {
            pair: TokenPair {
                access_token,
                refresh_token,
                token_type: "Bearer",
                expires_in: self.access_ttl_seconds,
            },
            refresh_jti: refresh.jti,
            refresh_expires_at: refresh.exp,
        })
    }

    /// Checks signature, algorithm, `kid`, `typ`, issuer, audience and validity window.
    pub fn verify(&self, token: &str, expected: TokenKind) -> Result<Claims, TokenError> {
        let reject = |why: &str| TokenError::Rejected(why.to_owned());
        let header = jsonwebtoken::decode_header(token).map_err(|_| reject("malformed token"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(reject("algorithm not allowed"));
        }
        if header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err(reject("unknown signing key"));
        }
        if header.typ.as_deref() != Some(expected.header_typ()) {
            return Err(reject("wrong token type"));
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| TokenError::Rejected(e.to_string()))?;
        if data.claims.typ != expected {
            return Err(reject("wrong token type"));
        }
        Ok(data.claims)
    }
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
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "send an Authorization: Bearer token"))?;
    let token = header
        .to_str()
        .ok()
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

impl<S> FromRequestParts<S> for Authenticated
where
    Arc<JwtKeys>: FromRef<S>,
    Store: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let SignedIn(claims) = SignedIn::from_request_parts(parts, state).await?;
        Ok(Authenticated(claims.caller()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(key: String) -> JwtSettings {
        JwtSettings {
            signing_key: Some(key),
            issuer: "https://issuer.test".into(),
            audience: "dotmac-test".into(),
            access_ttl_seconds: 900,
            refresh_ttl_seconds: 3600,
        }
    }

    fn keys() -> JwtKeys {
        let key = generate_signing_key().expect("key");
        JwtKeys::from_settings(&settings(key)).expect("keys")
    }

    fn admin() -> Caller {
        Caller { user_id: "u1".into(), tenant_id: None, roles: vec![Role::PlatformAdmin] }
    }

    #[test]
    fn access_tokens_round_trip_and_are_not_refresh_tokens() {
        let keys = keys();
        let pair = keys.issue(&admin(), "family", OffsetDateTime::now_utc()).expect("issued").pair;
        let claims = keys.verify(&pair.access_token, TokenKind::Access).expect("valid");
        assert_eq!(claims.caller(), admin());
        assert!(keys.verify(&pair.access_token, TokenKind::Refresh).is_err());
        assert!(keys.verify(&pair.refresh_token, TokenKind::Access).is_err());
        assert!(keys.verify(&pair.refresh_token, TokenKind::Refresh).is_ok());
    }

    #[test]
    fn refuses_expired_foreign_and_tampered_tokens() {
        let keys = keys();
        let old = OffsetDateTime::now_utc() - time::Duration::hours(2);
        let expired = keys.issue(&admin(), "family", old).expect("issued").pair.access_token;
        assert!(keys.verify(&expired, TokenKind::Access).is_err());

        let other = JwtKeys::from_settings(&settings(generate_signing_key().expect("key"))).expect("keys");
        let foreign =
            other.issue(&admin(), "family", OffsetDateTime::now_utc()).expect("issued").pair.access_token;
        assert!(keys.verify(&foreign, TokenKind::Access).is_err());

        let token =
            keys.issue(&admin(), "family", OffsetDateTime::now_utc()).expect("issued").pair.access_token;
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).expect("b64")).expect("json");
        payload["sub"] = "someone-else".into();
        parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
        assert!(keys.verify(&parts.join("."), TokenKind::Access).is_err());
    }

    #[test]
    fn refuses_alg_none() {
        let keys = keys();
        let header =
            URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"at+jwt","kid":"{}"}}"#, keys.kid()));
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let payload = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"iss":"https://issuer.test","aud":"dotmac-test","sub":"x","exp":{},"nbf":{now},"iat":{now},"jti":"j","typ":"at+jwt","roles":["platform_admin"]}}"#,
            now + 600
        ));
        assert!(keys.verify(&format!("{header}.{payload}."), TokenKind::Access).is_err());
    }

    fn admin_claims(iss: &str, aud: &str) -> Claims {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        Claims {
            iss: iss.into(),
            aud: aud.into(),
            sub: "u1".into(),
            exp: now + 600,
            nbf: now,
            iat: now,
            jti: "j".into(),
            typ: TokenKind::Access,
            tid: None,
            fam: None,
            roles: vec![Role::PlatformAdmin],
        }
    }

    fn sign_with(claims: &Claims, alg: Algorithm, kid: &str, key: &EncodingKey) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        header.typ = Some("at+jwt".into());
        jsonwebtoken::encode(&header, claims, key).expect("signed")
    }

    #[test]
    fn refuses_hs256_signed_with_our_public_key() {
        let keys = keys();
        let claims = admin_claims("https://issuer.test", "dotmac-test");
        let forged =
            sign_with(&claims, Algorithm::HS256, keys.kid(), &EncodingKey::from_secret(&keys.public_key));
        assert!(keys.verify(&forged, TokenKind::Access).is_err());
    }

    #[test]
    fn refuses_wrong_issuer_audience_and_unknown_kid() {
        let keys = keys();
        let key = &keys.encoding;
        let good = admin_claims("https://issuer.test", "dotmac-test");
        assert!(keys.verify(&sign_with(&good, Algorithm::EdDSA, keys.kid(), key), TokenKind::Access).is_ok());
        let wrong_iss = admin_claims("https://evil.test", "dotmac-test");
        assert!(
            keys.verify(&sign_with(&wrong_iss, Algorithm::EdDSA, keys.kid(), key), TokenKind::Access)
                .is_err()
        );
        let wrong_aud = admin_claims("https://issuer.test", "someone-else");
        assert!(
            keys.verify(&sign_with(&wrong_aud, Algorithm::EdDSA, keys.kid(), key), TokenKind::Access)
                .is_err()
        );
        assert!(
            keys.verify(&sign_with(&good, Algorithm::EdDSA, "unknown-kid", key), TokenKind::Access).is_err()
        );
    }
}
