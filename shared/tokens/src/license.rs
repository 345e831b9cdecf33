//! A tenant's license: what its container may switch on (plan, bundles) and whether its
//! account is in good standing, as a JWT signed by the platform's key set (the JWKS at
//! `/.well-known/jwks.json` verifies it, offline). Its header `typ` is `license+jwt` and its
//! audience the tenant itself, so it is never an access token: `JwtKeys::verify` refuses it
//! on both counts.

use dotmac_domain::TenantId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::jwt::{JwtKeys, TokenError};

/// The license's header type.
pub const LICENSE_TYP: &str = "license+jwt";

/// A license's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseClaims {
    /// The platform (the issuer of its access tokens).
    pub iss: String,
    /// The tenant the license is for (`tenant:<id>`).
    pub aud: String,
    /// The tenant's id.
    pub sub: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// The plan's id.
    pub plan: String,
    /// The codes of the bundles the tenant holds, sorted.
    pub bundles: Vec<String>,
    /// `current` while the account is in good standing (the payments work sets others).
    pub billing_status: String,
}

/// What a license states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entitlements {
    pub tenant_id: TenantId,
    pub plan: String,
    pub bundles: Vec<String>,
    pub billing_status: String,
}

/// The audience of a tenant's license.
pub fn license_audience(tenant: TenantId) -> String {
    format!("tenant:{tenant}")
}

impl JwtKeys {
    /// A license stating `entitlements`, valid for `ttl_seconds` from `now`.
    pub fn issue_license(
        &self,
        entitlements: &Entitlements,
        ttl_seconds: u64,
        now: OffsetDateTime,
    ) -> Result<(String, LicenseClaims), TokenError> {
        let iat = now.unix_timestamp();
        let mut bundles = entitlements.bundles.clone();
        bundles.sort_unstable();
        bundles.dedup();
        let claims = LicenseClaims {
            iss: self.issuer().to_owned(),
            aud: license_audience(entitlements.tenant_id),
            sub: entitlements.tenant_id.to_string(),
            iat,
            nbf: iat,
            exp: iat.saturating_add(i64::try_from(ttl_seconds).unwrap_or(i64::MAX / 2)),
            jti: uuid::Uuid::new_v4().to_string(),
            plan: entitlements.plan.clone(),
            bundles,
            billing_status: entitlements.billing_status.clone(),
        };
        Ok((self.sign_typed(LICENSE_TYP, &claims)?, claims))
    }

    /// Checks a license of `tenant` (signature, key, `typ`, issuer, audience, validity).
    pub fn verify_license(&self, token: &str, tenant: TenantId) -> Result<LicenseClaims, TokenError> {
        let claims: LicenseClaims = self.verify_typed(token, LICENSE_TYP, &license_audience(tenant))?;
        if claims.sub != tenant.to_string() {
            return Err(TokenError::Rejected(crate::jwt::Refusal::Malformed));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{KeySet, Refusal, StoredKey, TokenKind, generate_signing_key};
    use dotmac_config::JwtSettings;

    fn keys() -> JwtKeys {
        let settings = JwtSettings {
            signing_key: None,
            key_set: None,
            key_set_secret: None,
            public_key_set_secret: None,
            issuer: "https://issuer.test".into(),
            audience: "dotmac-test".into(),
            access_ttl_seconds: 900,
            refresh_ttl_seconds: 3600,
            session_max_seconds: 7200,
            key_reload_seconds: 300,
            rotate_after_seconds: 3600,
        };
        let set = KeySet { keys: vec![StoredKey::private(generate_signing_key().expect("key"), 0)] };
        JwtKeys::from_key_set(&set, &settings, OffsetDateTime::now_utc().unix_timestamp()).expect("keys")
    }

    fn entitlements(tenant: TenantId) -> Entitlements {
        Entitlements {
            tenant_id: tenant,
            plan: "scaled".into(),
            bundles: vec!["crm".into(), "ai".into()],
            billing_status: "current".into(),
        }
    }

    #[test]
    fn a_license_states_the_entitlements_and_verifies_only_as_that_tenants_license() {
        let keys = keys();
        let tenant = TenantId::generate();
        let now = OffsetDateTime::now_utc();
        let (license, claims) = keys.issue_license(&entitlements(tenant), 3600, now).expect("license");
        let header = jsonwebtoken::decode_header(&license).expect("header");
        assert_eq!(header.typ.as_deref(), Some("license+jwt"));
        assert_eq!(header.kid, Some(keys.kid()));
        let verified = keys.verify_license(&license, tenant).expect("verifies");
        assert_eq!(verified, claims);
        assert_eq!(
            (verified.plan.as_str(), verified.bundles.clone()),
            ("scaled", vec!["ai".to_owned(), "crm".to_owned()])
        );
        assert_eq!((verified.sub, verified.exp - verified.iat), (tenant.to_string(), 3600));
        assert!(keys.verify_license(&license, TenantId::generate()).is_err(), "another tenant's license");
    }

    #[test]
    fn a_license_is_never_an_access_or_refresh_token() {
        let keys = keys();
        let tenant = TenantId::generate();
        let (license, _) =
            keys.issue_license(&entitlements(tenant), 3600, OffsetDateTime::now_utc()).expect("license");
        for kind in [TokenKind::Access, TokenKind::Refresh] {
            assert_eq!(
                keys.verify(&license, kind),
                Err(TokenError::Rejected(Refusal::WrongType)),
                "{kind:?}"
            );
        }
        // Nor does an access token pass for a license.
        let (machine, _) = keys.issue_machine(tenant, 600, OffsetDateTime::now_utc()).expect("machine");
        assert_eq!(keys.verify_license(&machine, tenant), Err(TokenError::Rejected(Refusal::WrongType)));
    }
}
