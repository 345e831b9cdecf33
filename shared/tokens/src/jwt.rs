//! Bearer tokens: EdDSA-signed JWTs with a `kid`, a pinned algorithm and `iss`/`aud`/`exp`/
//! `nbf`/`typ` all checked (RFC 8725). Access and refresh tokens carry different `typ`s, so
//! one never passes for the other.

use arc_swap::ArcSwap;
use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use dotmac_config::JwtSettings;
use dotmac_domain::{Caller, PartnerId, RoleName, TenantId};
use dotmac_store::Store;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use time::OffsetDateTime;

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
    /// The absolute end of the token's session (seconds since the epoch): a refresh never
    /// issues a token that outlives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sxp: Option<i64>,
    /// The partner a partner's staff member works for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<PartnerId>,
    #[serde(default)]
    pub roles: Vec<RoleName>,
}

impl Claims {
    /// The caller as the token states it; custom roles' permissions are resolved separately
    /// (they live with the tenant, so a change to a role applies at once).
    pub fn caller(&self) -> Caller {
        Caller {
            user_id: self.sub.clone(),
            tenant_id: self.tid,
            partner_id: self.pid.clone(),
            roles: self.roles.clone(),
            custom_permissions: Vec::new(),
        }
    }
}

/// A JSON Web Key Set (RFC 7517) of Ed25519 public keys (OKP, RFC 8037).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Jwk {
    /// `OKP`
    pub kty: &'static str,
    /// `Ed25519`
    pub crv: &'static str,
    /// The public key, base64url.
    pub x: String,
    pub kid: String,
    /// `EdDSA`
    pub alg: &'static str,
    /// `sig`
    #[serde(rename = "use")]
    pub key_use: &'static str,
}

/// What sign-in and refresh answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
    Rejected(Refusal),
    #[error("token could not be signed: {0}")]
    Signing(String),
}

/// Why a token was refused: each check of `JwtKeys::verify` has its own answer, so a test
/// (or a log line) says which check stopped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("signing key retired")]
    RetiredKey,
    #[error("wrong token type")]
    WrongType,
    #[error("bad signature")]
    BadSignature,
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYetValid,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("a required claim is missing")]
    MissingClaim,
}

impl From<jsonwebtoken::errors::Error> for Refusal {
    fn from(error: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind;
        match error.kind() {
            ErrorKind::InvalidSignature => Refusal::BadSignature,
            ErrorKind::ExpiredSignature => Refusal::Expired,
            ErrorKind::ImmatureSignature => Refusal::NotYetValid,
            ErrorKind::InvalidIssuer => Refusal::WrongIssuer,
            ErrorKind::InvalidAudience => Refusal::WrongAudience,
            ErrorKind::MissingRequiredClaim(_) => Refusal::MissingClaim,
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => Refusal::AlgorithmNotAllowed,
            _ => Refusal::Malformed,
        }
    }
}

/// One key of the key set, as stored (the value of `DOTMAC_JWT_KEY_SET`, and of the secrets
/// that hold it): `{"keys":[{"private_key","not_before","retire_at"}]}` for the signers, the
/// same with `public_key` instead of `private_key` for the functions that only verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    /// Base64 PKCS#8 Ed25519.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// Base64url raw Ed25519 public key (as in a JWK's `x`), in the public set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// From when it signs (unix seconds). A key published before it signs lets every instance
    /// verify its tokens before any instance issues them.
    pub not_before: i64,
    /// From when tokens it signed are refused; `None` while it is current.
    #[serde(default)]
    pub retire_at: Option<i64>,
}

impl StoredKey {
    pub fn private(private_key: String, not_before: i64) -> Self {
        StoredKey { private_key: Some(private_key), public_key: None, not_before, retire_at: None }
    }

    /// The key's public half, and its id (a digest of it).
    fn public_half(&self) -> Result<(Vec<u8>, String), TokenError> {
        let public = match (&self.private_key, &self.public_key) {
            (Some(private), _) => {
                let pkcs8 = STANDARD.decode(private.trim()).map_err(|_| TokenError::BadSigningKey)?;
                let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| TokenError::BadSigningKey)?;
                pair.public_key().as_ref().to_vec()
            }
            (None, Some(public)) => {
                URL_SAFE_NO_PAD.decode(public.trim()).map_err(|_| TokenError::BadSigningKey)?
            }
            (None, None) => return Err(TokenError::BadSigningKey),
        };
        let kid = URL_SAFE_NO_PAD.encode(&digest::digest(&digest::SHA256, &public).as_ref()[..12]);
        Ok((public, kid))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KeySet {
    pub keys: Vec<StoredKey>,
}

impl KeySet {
    /// Rotation: `new_key` is published now and signs from `now + publish_lead_seconds` (by
    /// then every instance has reloaded the set and verifies it). The keys that signed until
    /// then keep verifying for `overlap_seconds` more (at least the longest token lifetime,
    /// so nobody is signed out), and keys already past retirement are dropped.
    pub fn rotate(
        mut self,
        new_key: String,
        now: i64,
        publish_lead_seconds: i64,
        overlap_seconds: i64,
    ) -> KeySet {
        let switch_at = now + publish_lead_seconds;
        for key in &mut self.keys {
            if key.retire_at.is_none() && key.not_before <= switch_at {
                key.retire_at = Some(switch_at + overlap_seconds);
            }
        }
        self.keys.retain(|key| key.retire_at.is_none_or(|at| at > now));
        self.keys.push(StoredKey::private(new_key, switch_at));
        self
    }

    /// The same set without its private keys: what the functions that only verify load.
    pub fn public(&self) -> Result<KeySet, TokenError> {
        let keys = self
            .keys
            .iter()
            .map(|key| {
                let (public, _) = key.public_half()?;
                Ok(StoredKey {
                    private_key: None,
                    public_key: Some(URL_SAFE_NO_PAD.encode(public)),
                    not_before: key.not_before,
                    retire_at: key.retire_at,
                })
            })
            .collect::<Result<_, TokenError>>()?;
        Ok(KeySet { keys })
    }

    /// When the newest key was (or will be) first used to sign.
    pub fn newest_not_before(&self) -> Option<i64> {
        self.keys.iter().map(|key| key.not_before).max()
    }
}

struct VerifyingKey {
    kid: String,
    /// The raw 32-byte Ed25519 public key, published in the JWKS.
    public_key: Vec<u8>,
    decoding: DecodingKey,
    retire_at: Option<i64>,
}

/// The keys of one version of the key set.
struct KeyMaterial {
    /// The key that signs now and its id; `None` where tokens are only verified.
    signer: Option<(String, EncodingKey)>,
    verifying: Vec<VerifyingKey>,
}

/// Whether an instance issues tokens or only checks them (and so never holds a private key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    SignAndVerify,
    VerifyOnly,
}

/// The platform's keys and the rules tokens are checked against. Built once at cold start
/// and shared; `reload` swaps in a new version of the key set without stopping anyone. One
/// key signs; every live key of the set verifies, so a rotation never signs anyone out.
pub struct JwtKeys {
    key_use: KeyUse,
    material: ArcSwap<KeyMaterial>,
    issuer: String,
    audience: String,
    access_ttl_seconds: u64,
    refresh_ttl_seconds: u64,
    session_max_seconds: u64,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("kid", &self.kid())
            .field("key_use", &self.key_use)
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
    /// From the configured key set (`DOTMAC_JWT_KEY_SET`), or the single signing key
    /// (`DOTMAC_JWT_SIGNING_KEY`) as a set of one.
    pub fn from_settings(settings: &JwtSettings) -> Result<Self, TokenError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let set = match (&settings.key_set, &settings.signing_key) {
            (Some(json), _) => serde_json::from_str(json).map_err(|_| TokenError::BadSigningKey)?,
            (None, Some(key)) => KeySet { keys: vec![StoredKey::private(key.clone(), 0)] },
            (None, None) => return Err(TokenError::NoSigningKey),
        };
        Self::from_key_set(&set, settings, now)
    }

    pub fn from_key_set(set: &KeySet, settings: &JwtSettings, now: i64) -> Result<Self, TokenError> {
        Self::with_use(KeyUse::SignAndVerify, set, settings, now)
    }

    /// Keys that only verify (from the public set; private keys, if any, are ignored).
    pub fn verifier(set: &KeySet, settings: &JwtSettings, now: i64) -> Result<Self, TokenError> {
        Self::with_use(KeyUse::VerifyOnly, set, settings, now)
    }

    /// No keys at all: for a function that neither signs nor verifies (health), so its cold
    /// start never depends on the key set (which is empty until the first rotation). Every
    /// token is refused and nothing can be signed.
    pub fn none(settings: &JwtSettings) -> Self {
        Self {
            key_use: KeyUse::VerifyOnly,
            material: ArcSwap::from_pointee(KeyMaterial { signer: None, verifying: Vec::new() }),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            access_ttl_seconds: settings.access_ttl_seconds,
            refresh_ttl_seconds: settings.refresh_ttl_seconds,
            session_max_seconds: settings.session_max_seconds,
        }
    }

    fn with_use(key_use: KeyUse, set: &KeySet, settings: &JwtSettings, now: i64) -> Result<Self, TokenError> {
        Ok(Self {
            key_use,
            material: ArcSwap::from_pointee(KeyMaterial::from_key_set(set, key_use, now)?),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            access_ttl_seconds: settings.access_ttl_seconds,
            refresh_ttl_seconds: settings.refresh_ttl_seconds,
            session_max_seconds: settings.session_max_seconds,
        })
    }

    /// Swaps in a new version of the key set (a rotation, or keys retiring). A set that
    /// cannot sign is refused and the current keys stay.
    pub fn reload(&self, set: &KeySet, now: i64) -> Result<(), TokenError> {
        let material = KeyMaterial::from_key_set(set, self.key_use, now)?;
        let current = self.material.load();
        let changed = material.signer.as_ref().map(|(kid, _)| kid)
            != current.signer.as_ref().map(|(kid, _)| kid)
            || material.verifying.len() != self.material.load().verifying.len();
        self.material.store(Arc::new(material));
        if changed {
            tracing::info!(kid = %self.kid(), "signing keys reloaded");
        }
        Ok(())
    }
}

impl KeyMaterial {
    fn from_key_set(set: &KeySet, key_use: KeyUse, now: i64) -> Result<Self, TokenError> {
        let mut signer: Option<((i64, bool), String, Vec<u8>)> = None;
        let mut verifying = Vec::new();
        for key in &set.keys {
            if key.retire_at.is_some_and(|at| at <= now) {
                continue;
            }
            let (public, kid) = key.public_half()?;
            // A retiring key (retire_at set, still in the future) keeps signing until its
            // successor's `not_before`: the newest key that has started signing wins.
            let signs_now = key.not_before <= now && key_use == KeyUse::SignAndVerify;
            let pkcs8 = match (&key.private_key, signs_now) {
                (Some(private), true) => {
                    STANDARD.decode(private.trim()).map_err(|_| TokenError::BadSigningKey)?
                }
                _ => Vec::new(),
            };
            // On a tie (a key replaced within the second it started), the one not retiring, and
            // then the later in the set (rotation appends), signs.
            let rank = (key.not_before, key.retire_at.is_none());
            if !pkcs8.is_empty() && signer.as_ref().is_none_or(|(best, _, _)| rank >= *best) {
                signer = Some((rank, kid.clone(), pkcs8));
            }
            verifying.push(VerifyingKey {
                kid,
                decoding: DecodingKey::from_ed_der(&public),
                public_key: public,
                retire_at: key.retire_at,
            });
        }
        let signer = match (key_use, signer) {
            (KeyUse::SignAndVerify, None) => return Err(TokenError::NoSigningKey),
            (KeyUse::VerifyOnly, _) if verifying.is_empty() => return Err(TokenError::NoSigningKey),
            (KeyUse::VerifyOnly, _) => None,
            (KeyUse::SignAndVerify, Some((_, kid, pkcs8))) => Some((kid, EncodingKey::from_ed_der(&pkcs8))),
        };
        Ok(Self { signer, verifying })
    }
}

impl JwtKeys {
    /// The id of the key that signs now (empty where tokens are only verified).
    pub fn kid(&self) -> String {
        self.material.load().signer.as_ref().map(|(kid, _)| kid.clone()).unwrap_or_default()
    }

    /// The public half as a JSON Web Key Set (RFC 7517, OKP keys per RFC 8037), so any JWT
    /// library can verify our tokens.
    pub fn jwks(&self) -> JwkSet {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let material = self.material.load();
        let keys = material
            .verifying
            .iter()
            .filter(|key| key.retire_at.is_none_or(|at| at > now))
            .map(|key| Jwk {
                kty: "OKP",
                crv: "Ed25519",
                x: URL_SAFE_NO_PAD.encode(&key.public_key),
                kid: key.kid.clone(),
                alg: "EdDSA",
                key_use: "sig",
            })
            .collect();
        JwkSet { keys }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// When a session started at `now` must end, however often it is refreshed.
    pub fn session_ends_at(&self, now: OffsetDateTime) -> i64 {
        now.unix_timestamp().saturating_add(i64::try_from(self.session_max_seconds).unwrap_or(i64::MAX / 2))
    }

    fn sign(
        &self,
        caller: &Caller,
        session: Option<&SessionTerm<'_>>,
        kind: TokenKind,
        ttl: u64,
        now: OffsetDateTime,
    ) -> Result<(String, Claims), TokenError> {
        let iat = now.unix_timestamp();
        let exp = iat.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX / 2));
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: caller.user_id.clone(),
            exp: session.map_or(exp, |session| exp.min(session.ends_at)),
            nbf: iat,
            iat,
            jti: uuid::Uuid::new_v4().to_string(),
            typ: kind,
            tid: caller.tenant_id,
            fam: session.map(|session| session.family.to_owned()),
            sxp: session.map(|session| session.ends_at),
            pid: caller.partner_id.clone(),
            roles: caller.roles.clone(),
        };
        let material = self.material.load();
        let (kid, encoding) = material.signer.as_ref().ok_or(TokenError::NoSigningKey)?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        header.typ = Some(kind.header_typ().to_owned());
        let token = jsonwebtoken::encode(&header, &claims, encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))?;
        Ok((token, claims))
    }

    /// An access and a refresh token for `caller`, both in `session` and neither outliving it.
    pub fn issue(
        &self,
        caller: &Caller,
        session: &SessionTerm<'_>,
        now: OffsetDateTime,
    ) -> Result<Issued, TokenError> {
        let (access_token, _) =
            self.sign(caller, Some(session), TokenKind::Access, self.access_ttl_seconds, now)?;
        let (refresh_token, refresh) =
            self.sign(caller, Some(session), TokenKind::Refresh, self.refresh_ttl_seconds, now)?;
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

    /// The bearer token of a tenant's container: an access token whose only role is
    /// `tenant_machine` (report usage and health for its own tenant), valid for `ttl_seconds`.
    /// It is in no sign-in session; it is revoked through the deny-list by its `jti`.
    pub fn issue_machine(
        &self,
        tenant_id: TenantId,
        ttl_seconds: u64,
        now: OffsetDateTime,
    ) -> Result<(String, Claims), TokenError> {
        let caller = Caller::new(
            format!("machine:{tenant_id}"),
            Some(tenant_id),
            &[dotmac_domain::Role::TenantMachine],
        );
        self.sign(&caller, None, TokenKind::Access, ttl_seconds, now)
    }

    /// Signs `claims` with the current key, `typ` in the header (licenses use it).
    pub(crate) fn sign_typed<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, TokenError> {
        let material = self.material.load();
        let (kid, encoding) = material.signer.as_ref().ok_or(TokenError::NoSigningKey)?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, encoding).map_err(|e| TokenError::Signing(e.to_string()))
    }

    /// Checks a token of header type `typ` for `audience` as `verify` checks ours.
    pub(crate) fn verify_typed<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        typ: &str,
        audience: &str,
    ) -> Result<T, TokenError> {
        let reject = TokenError::Rejected;
        let header = jsonwebtoken::decode_header(token).map_err(|_| reject(Refusal::Malformed))?;
        if header.alg != Algorithm::EdDSA {
            return Err(reject(Refusal::AlgorithmNotAllowed));
        }
        let material = self.material.load();
        let key = material
            .verifying
            .iter()
            .find(|key| header.kid.as_deref() == Some(key.kid.as_str()))
            .ok_or(reject(Refusal::UnknownKey))?;
        if key.retire_at.is_some_and(|at| at <= OffsetDateTime::now_utc().unix_timestamp()) {
            return Err(reject(Refusal::RetiredKey));
        }
        if header.typ.as_deref() != Some(typ) {
            return Err(reject(Refusal::WrongType));
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = CLOCK_LEEWAY_SECONDS;
        let data =
            jsonwebtoken::decode::<T>(token, &key.decoding, &validation).map_err(|e| reject(e.into()))?;
        Ok(data.claims)
    }

    /// Checks signature, algorithm, `kid`, `typ`, issuer, audience and validity window.
    pub fn verify(&self, token: &str, expected: TokenKind) -> Result<Claims, TokenError> {
        let claims: Claims = self.verify_typed(token, expected.header_typ(), &self.audience)?;
        if claims.typ != expected {
            return Err(TokenError::Rejected(Refusal::WrongType));
        }
        Ok(claims)
    }
}

/// The sign-in session tokens are issued in: its id (the refresh-token family) and its
/// absolute end.
#[derive(Debug, Clone, Copy)]
pub struct SessionTerm<'a> {
    pub family: &'a str,
    pub ends_at: i64,
}

/// Clock skew tolerated on `exp` and `nbf`.
pub const CLOCK_LEEWAY_SECONDS: u64 = 30;

/// Signs a token out everywhere: its `jti` goes on the deny-list that `check_bearer` reads,
/// kept past `exp` by the verifier's leeway (or the token would verify again meanwhile).
pub async fn revoke_token(store: &Store, jti: &str, exp: i64) -> Result<(), dotmac_store::StoreError> {
    let leeway = i64::try_from(CLOCK_LEEWAY_SECONDS).unwrap_or(60);
    store.deny_token(jti, exp.saturating_add(leeway)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use dotmac_domain::Role;

    fn settings(key: String) -> JwtSettings {
        JwtSettings {
            signing_key: Some(key),
            key_set: None,
            key_set_secret: None,
            public_key_set_secret: None,
            key_reload_seconds: 300,
            rotate_after_seconds: 30 * 24 * 3600,
            issuer: "https://issuer.test".into(),
            audience: "dotmac-test".into(),
            access_ttl_seconds: 900,
            refresh_ttl_seconds: 3600,
            session_max_seconds: 7200,
        }
    }

    fn keys() -> JwtKeys {
        let key = generate_signing_key().expect("key");
        JwtKeys::from_settings(&settings(key)).expect("keys")
    }

    fn refused(refusal: Refusal) -> Option<TokenError> {
        Some(TokenError::Rejected(refusal))
    }

    const SESSION: SessionTerm<'static> = SessionTerm { family: "family", ends_at: i64::MAX };

    #[test]
    fn no_token_outlives_its_session() {
        let keys = keys();
        let now = OffsetDateTime::now_utc();
        let ends_at = now.unix_timestamp() + 60;
        let session = SessionTerm { family: "f", ends_at };
        let issued = keys.issue(&admin(), &session, now).expect("issued");
        let access = keys.verify(&issued.pair.access_token, TokenKind::Access).expect("access");
        assert_eq!((access.exp, access.sxp, access.fam.as_deref()), (ends_at, Some(ends_at), Some("f")));
        assert_eq!(issued.refresh_expires_at, ends_at, "the refresh token ends with the session");
        let roomy = SessionTerm { family: "f", ends_at: now.unix_timestamp() + 1_000_000 };
        let issued = keys.issue(&admin(), &roomy, now).expect("issued");
        assert_eq!(issued.refresh_expires_at, now.unix_timestamp() + 3600, "its own ttl when shorter");
    }

    fn admin() -> Caller {
        Caller::new("u1", None, &[Role::PlatformAdmin])
    }

    #[test]
    fn access_tokens_round_trip_and_are_not_refresh_tokens() {
        let keys = keys();
        let pair = keys.issue(&admin(), &SESSION, OffsetDateTime::now_utc()).expect("issued").pair;
        let claims = keys.verify(&pair.access_token, TokenKind::Access).expect("valid");
        assert_eq!(claims.caller(), admin());
        assert_eq!(keys.verify(&pair.access_token, TokenKind::Refresh).err(), refused(Refusal::WrongType));
        assert_eq!(keys.verify(&pair.refresh_token, TokenKind::Access).err(), refused(Refusal::WrongType));
        assert!(keys.verify(&pair.refresh_token, TokenKind::Refresh).is_ok());
    }

    #[test]
    fn refuses_expired_foreign_and_tampered_tokens() {
        let keys = keys();
        let old = OffsetDateTime::now_utc() - time::Duration::hours(2);
        let expired = keys.issue(&admin(), &SESSION, old).expect("issued").pair.access_token;
        assert_eq!(keys.verify(&expired, TokenKind::Access).err(), refused(Refusal::Expired));

        let other = JwtKeys::from_settings(&settings(generate_signing_key().expect("key"))).expect("keys");
        let foreign =
            other.issue(&admin(), &SESSION, OffsetDateTime::now_utc()).expect("issued").pair.access_token;
        // Another key set's key has another id: it is never even tried.
        assert_eq!(keys.verify(&foreign, TokenKind::Access).err(), refused(Refusal::UnknownKey));

        let token =
            keys.issue(&admin(), &SESSION, OffsetDateTime::now_utc()).expect("issued").pair.access_token;
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).expect("b64")).expect("json");
        payload["sub"] = "someone-else".into();
        parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
        assert_eq!(keys.verify(&parts.join("."), TokenKind::Access).err(), refused(Refusal::BadSignature));
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
        // `none` is not an algorithm the JWT library parses at all: refused before any key.
        let refusal = keys.verify(&format!("{header}.{payload}."), TokenKind::Access).err();
        assert!(
            matches!(refusal, Some(TokenError::Rejected(Refusal::Malformed | Refusal::AlgorithmNotAllowed))),
            "{refusal:?}"
        );
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
            sxp: None,
            pid: None,
            roles: vec![Role::PlatformAdmin.into()],
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
        let public = keys.material.load().verifying[0].public_key.clone();
        let forged = sign_with(&claims, Algorithm::HS256, &keys.kid(), &EncodingKey::from_secret(&public));
        assert_eq!(keys.verify(&forged, TokenKind::Access).err(), refused(Refusal::AlgorithmNotAllowed));
    }

    #[test]
    fn refuses_wrong_issuer_audience_and_unknown_kid() {
        let keys = keys();
        let material = keys.material.load();
        let key = &material.signer.as_ref().expect("a signer").1;
        let good = admin_claims("https://issuer.test", "dotmac-test");
        assert!(
            keys.verify(&sign_with(&good, Algorithm::EdDSA, &keys.kid(), key), TokenKind::Access).is_ok()
        );
        let wrong_iss = admin_claims("https://evil.test", "dotmac-test");
        let signed = |claims: &Claims, kid: &str| sign_with(claims, Algorithm::EdDSA, kid, key);
        assert_eq!(
            keys.verify(&signed(&wrong_iss, &keys.kid()), TokenKind::Access).err(),
            refused(Refusal::WrongIssuer)
        );
        let wrong_aud = admin_claims("https://issuer.test", "someone-else");
        assert_eq!(
            keys.verify(&signed(&wrong_aud, &keys.kid()), TokenKind::Access).err(),
            refused(Refusal::WrongAudience)
        );
        assert_eq!(
            keys.verify(&signed(&good, "unknown-kid"), TokenKind::Access).err(),
            refused(Refusal::UnknownKey)
        );
        let mut early = good.clone();
        early.nbf += 3600;
        assert_eq!(
            keys.verify(&signed(&early, &keys.kid()), TokenKind::Access).err(),
            refused(Refusal::NotYetValid)
        );
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_through_the_overlap_and_not_after() {
        let settings = settings(String::new());
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let first = KeySet { keys: vec![StoredKey::private(generate_signing_key().expect("key"), now - 10)] };
        let before = JwtKeys::from_key_set(&first, &settings, now).expect("keys");
        let old_token =
            before.issue(&admin(), &SESSION, OffsetDateTime::now_utc()).expect("issued").pair.access_token;

        let rotated = first.rotate(generate_signing_key().expect("key"), now, 0, 3600);
        let after = JwtKeys::from_key_set(&rotated, &settings, now).expect("keys");
        assert_ne!(after.kid(), before.kid(), "the new key signs");
        assert_eq!(after.jwks().keys.len(), 2, "both keys are published");
        assert!(after.verify(&old_token, TokenKind::Access).is_ok(), "nobody is signed out by a rotation");
        let new_token =
            after.issue(&admin(), &SESSION, OffsetDateTime::now_utc()).expect("issued").pair.access_token;
        assert!(after.verify(&new_token, TokenKind::Access).is_ok());

        // Past the overlap the old key is gone from the set...
        let later = JwtKeys::from_key_set(&rotated, &settings, now + 3601).expect("keys");
        assert_eq!(later.verify(&old_token, TokenKind::Access).err(), refused(Refusal::UnknownKey));
        // ...and an instance that loaded the set earlier refuses it too once it retires.
        let mut retiring = rotated.clone();
        retiring.keys[0].retire_at = Some(now - 1);
        retiring.keys[1].not_before = now - 200;
        let stale_instance = JwtKeys::from_key_set(&retiring, &settings, now - 100).expect("keys");
        assert_eq!(stale_instance.verify(&old_token, TokenKind::Access).err(), refused(Refusal::RetiredKey));
    }

    #[test]
    fn during_the_publish_lead_the_old_key_signs_and_the_new_one_already_verifies() {
        let settings = settings(String::new());
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let first = KeySet { keys: vec![StoredKey::private(generate_signing_key().expect("key"), now - 10)] };
        let before = JwtKeys::from_key_set(&first, &settings, now).expect("keys");
        let rotated = first.rotate(generate_signing_key().expect("key"), now, 600, 3600);
        let during = JwtKeys::from_key_set(&rotated, &settings, now).expect("a set mid-rotation still signs");
        assert_eq!(during.kid(), before.kid(), "the old key signs until the switch");
        assert_eq!(during.jwks().keys.len(), 2, "the new key is already published");
        let after = JwtKeys::from_key_set(&rotated, &settings, now + 601).expect("keys");
        assert_ne!(after.kid(), before.kid(), "the new key signs after the switch");
        let new_token =
            after.issue(&admin(), &SESSION, OffsetDateTime::now_utc()).expect("issued").pair.access_token;
        assert!(during.verify(&new_token, TokenKind::Access).is_ok(), "instances mid-rotation accept it");
    }

    #[test]
    fn a_verifier_holds_no_private_key_and_verifies_what_the_signer_issues() {
        let settings = settings(String::new());
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let set = KeySet { keys: vec![StoredKey::private(generate_signing_key().expect("key"), now - 10)] };
        let signer = JwtKeys::from_key_set(&set, &settings, now).expect("keys");
        let public = set.public().expect("public set");
        assert!(public.keys.iter().all(|k| k.private_key.is_none()));
        let verifier = JwtKeys::verifier(&public, &settings, now).expect("verifier");
        let token =
            signer.issue(&admin(), &SESSION, OffsetDateTime::now_utc()).expect("issued").pair.access_token;
        assert!(verifier.verify(&token, TokenKind::Access).is_ok());
        assert_eq!(verifier.jwks(), signer.jwks(), "the same published keys");
        assert_eq!(
            verifier.issue(&admin(), &SESSION, OffsetDateTime::now_utc()),
            Err(TokenError::NoSigningKey)
        );
        assert!(
            JwtKeys::verifier(&KeySet::default(), &settings, now).is_err(),
            "an empty set verifies nothing"
        );
        assert!(JwtKeys::from_key_set(&public, &settings, now).is_err(), "a public set cannot sign");
    }

    #[test]
    fn a_published_next_key_verifies_before_it_signs() {
        let settings = settings(String::new());
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let next_key = generate_signing_key().expect("key");
        let set = KeySet {
            keys: vec![
                StoredKey {
                    private_key: Some(generate_signing_key().expect("key")),
                    public_key: None,
                    not_before: now - 10,
                    retire_at: None,
                },
                StoredKey {
                    private_key: Some(next_key.clone()),
                    public_key: None,
                    not_before: now + 600,
                    retire_at: None,
                },
            ],
        };
        let current = JwtKeys::from_key_set(&set, &settings, now).expect("keys");
        let next_only = KeySet {
            keys: vec![StoredKey {
                private_key: Some(next_key),
                public_key: None,
                not_before: now - 1,
                retire_at: None,
            }],
        };
        let next = JwtKeys::from_key_set(&next_only, &settings, now).expect("keys");
        assert_ne!(current.kid(), next.kid(), "the current key still signs");
        let token =
            next.issue(&admin(), &SESSION, OffsetDateTime::now_utc()).expect("issued").pair.access_token;
        assert!(current.verify(&token, TokenKind::Access).is_ok(), "tokens of the next key already verify");
    }
}
