//! Identity's CPU costs on one core: what a sign-in, a token check and a policy decision
//! each cost, as operations per second (the figures issue 3 asks `make bench` for).

use crate::report::{Better, Row};
use dotmac_config::JwtSettings;
use dotmac_domain::{Action, Caller, Resource, Role, Target, TenantId, authorize};
use dotmac_tokens::{JwtKeys, TokenKind};
use std::hint::black_box;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

const SECTION: &str = "2 in-process handler cost: authenticated GET /v1/tenants/{id}";

/// Runs `op` until `count` runs or `budget` passes, whichever is first; returns ops/s.
fn ops_per_second(count: u32, budget: Duration, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut done = 0u32;
    while done < count && start.elapsed() < budget {
        op();
        done += 1;
    }
    f64::from(done) / start.elapsed().as_secs_f64().max(f64::EPSILON)
}

pub fn rows() -> Vec<Row> {
    let fail = |error: String| {
        vec![Row::missing("auth.ops", SECTION, "identity primitives", "ops/s", Better::Higher, "-", error)]
    };
    let key = match dotmac_tokens::generate_signing_key() {
        Ok(key) => key,
        Err(error) => return fail(format!("failed: {error}")),
    };
    let settings = JwtSettings {
        signing_key: Some(key),
        key_set: None,
        key_set_secret: None,
        public_key_set_secret: None,
        key_reload_seconds: 300,
        rotate_after_seconds: 30 * 24 * 3600,
        issuer: "https://api.dotmac.local".into(),
        audience: "dotmac-platform".into(),
        access_ttl_seconds: 900,
        refresh_ttl_seconds: 3600,
        session_max_seconds: 30 * 24 * 3600,
    };
    let keys = match JwtKeys::from_settings(&settings) {
        Ok(keys) => keys,
        Err(error) => return fail(format!("failed: {error}")),
    };
    let tenant = TenantId::generate();
    let caller = Caller::new("u-bench", Some(tenant), &[Role::TenantAdmin]);
    let token = match keys.issue(
        &caller,
        &dotmac_tokens::SessionTerm { family: "bench", ends_at: i64::MAX },
        OffsetDateTime::now_utc(),
    ) {
        Ok(issued) => issued.pair.access_token,
        Err(error) => return fail(format!("failed: {error}")),
    };
    let hash = match dotmac_tokens::hash_password("a bench password of fair length") {
        Ok(hash) => hash,
        Err(error) => return fail(format!("failed: {error}")),
    };
    let budget = Duration::from_secs(3);
    let password_checks = ops_per_second(30, budget, || {
        black_box(
            dotmac_tokens::verify_password(black_box("a bench password of fair length"), Some(&hash)).ok(),
        );
    });
    let token_checks = ops_per_second(20_000, budget, || {
        black_box(keys.verify(black_box(&token), TokenKind::Access).ok());
    });
    let token_issues = ops_per_second(10_000, budget, || {
        black_box(
            keys.issue(
                black_box(&caller),
                &dotmac_tokens::SessionTerm { family: "bench", ends_at: i64::MAX },
                OffsetDateTime::now_utc(),
            )
            .ok(),
        );
    });
    let target = Target::tenant(tenant);
    let decisions = ops_per_second(2_000_000, budget, || {
        black_box(authorize(black_box(&caller), Resource::Tenant, Action::Read, target).is_ok());
    });
    // A custom role's holder: its permissions come from the tenant's definitions, so the policy
    // walks them instead of a built-in role's table.
    let clerk = Caller {
        roles: vec![dotmac_domain::RoleName::from(Role::CustomerUser)],
        custom_permissions: dotmac_domain::Resource::ALL
            .into_iter()
            .filter(|r| *r != Resource::Tenant)
            .map(|r| {
                dotmac_domain::Permission::new(Some(r), Some(Action::Read), dotmac_domain::Scope::Tenant)
            })
            .collect(),
        ..caller.clone()
    };
    let custom_decisions = ops_per_second(2_000_000, budget, || {
        black_box(authorize(black_box(&clerk), Resource::Health, Action::Read, target).is_ok());
    });
    let row = |id: &str, name: &str, value: f64, anchor: &str| {
        Row::measured(id, SECTION, name, value, "ops/s", Better::Higher, anchor)
    };
    vec![
        row(
            "auth.login_password_ops",
            "sign-in: argon2id password check (19 MiB, 2 passes), one core",
            password_checks,
            "OWASP's argon2id minimum; the cost is deliberate (a login's CPU floor)",
        ),
        row(
            "auth.token_issue_ops",
            "sign-in: issue an access + refresh pair (2 EdDSA signatures), one core",
            token_issues,
            "no published anchor",
        ),
        row(
            "auth.token_verify_ops",
            "every request: verify an access token (EdDSA, claims), one core",
            token_checks,
            "no published anchor",
        ),
        row(
            "auth.authorize_ops",
            "every request: the policy decision (authorize), one core",
            decisions,
            "no published anchor",
        ),
        row(
            "auth.authorize_custom_role_ops",
            "every request: the policy decision for a custom role of 8 permissions, one core",
            custom_decisions,
            "no published anchor",
        ),
    ]
}
