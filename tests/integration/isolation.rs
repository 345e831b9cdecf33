//! Tenant isolation on every route: the inventory comes from the router itself, so a route
//! added later is checked without anyone remembering to.

use dotmac_domain::{Role, RoleName};
use dotmac_http::{Access, RouteSpec};
use dotmac_tests::{TestApp, new_tenant_body};
use http::Method;
use serde_json::{Value, json};

/// Tenant B's objects, which every route is aimed at.
struct TenantB {
    tenant: dotmac_domain::TenantId,
    user: String,
    role: &'static str,
}

impl TenantB {
    /// The route's path and query aimed at B: its tenant, its user, its role.
    fn path(&self, route: &RouteSpec) -> String {
        let mut path = route.path.replace("{name}", self.role);
        path = if route.path.starts_with("/v1/users/") {
            path.replace("{id}", &self.user)
        } else {
            path.replace("{id}", &self.tenant.to_string())
        };
        if route.path.starts_with("/v1/users") || route.path.starts_with("/v1/roles") {
            path = format!("{path}?tenant_id={}", self.tenant);
        }
        path
    }

    /// A body that would pass validation, aimed at B where a body can name a tenant.
    fn body(&self, route: &RouteSpec) -> Option<Value> {
        if !matches!(route.method, Method::POST | Method::PUT | Method::PATCH) {
            return None;
        }
        let permissions = json!([{ "resource": "invoice", "action": "read", "scope": "tenant" }]);
        let slug = uuid::Uuid::new_v4().simple().to_string();
        Some(match (route.method.as_str(), route.path.as_str()) {
            ("POST", "/v1/tenants") => new_tenant_body("usage"),
            ("POST", "/v1/users") => json!({
                "email": format!("intruder-{}@b.example", &slug[..8]),
                "password": "a-long-enough-passphrase",
                "roles": ["tenant_admin"],
                "tenant_id": self.tenant,
            }),
            ("PATCH", "/v1/users/{id}") => json!({ "active": false, "roles": ["customer_user"] }),
            ("POST", "/v1/roles") => {
                json!({ "name": format!("r{}", &slug[..8]), "permissions": permissions, "tenant_id": self.tenant })
            }
            ("PUT", "/v1/roles/{name}") => json!({ "permissions": permissions }),
            ("POST", "/v1/tenants/{id}/health") => json!({ "status": "unhealthy" }),
            _ => new_tenant_body("usage"),
        })
    }

    /// Whether the request names one of B's objects (rather than the caller's own tenant
    /// collection, which a partner may list and add to).
    fn addresses_b(route: &RouteSpec) -> bool {
        route.path != "/v1/tenants"
    }
}

#[tokio::test]
async fn every_route_keeps_tenants_apart_and_roles_in_their_place() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let (tenant_a, tenant_b) = (app.onboarded_tenant(&admin).await, app.onboarded_tenant(&admin).await);
    let b_before = app.stack.platform.store.get_tenant(tenant_b).await.expect("get").expect("exists");
    let b_user = app.create_user("someone@b.example", Some(tenant_b), None, &["customer_user"]).await;
    let b_role = "b-auditor";
    let (status, body) = app
        .send(
            Method::POST,
            "/v1/roles",
            Some(&admin),
            Some(&json!({ "name": b_role, "permissions": [{ "resource": "invoice", "action": "*", "scope": "tenant" }], "tenant_id": tenant_b })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let b = TenantB { tenant: tenant_b, user: b_user.clone(), role: b_role };

    let a_admin = app.user_token("admin@a.example", tenant_a, Role::TenantAdmin).await;
    let a_customer = app.user_token("customer@a.example", tenant_a, Role::CustomerUser).await;
    let (a_machine, _) = app
        .stack
        .platform
        .keys
        .issue_machine(tenant_a, 600, time::OffsetDateTime::now_utc())
        .expect("machine token");
    app.create_user("staff@other-partner.example", None, Some("other-partner"), &["partner"]).await;
    let stranger_partner = app.token_for("staff@other-partner.example", dotmac_tests::USER_PASSWORD).await;

    let inventory = app.stack.platform.api_routes().inventory;
    let protected: Vec<_> = inventory.iter().filter(|r| r.access == Access::Authenticated).collect();
    assert!(protected.len() >= 15, "the inventory lists tenants, users, roles and health: {inventory:?}");
    assert!(inventory.iter().any(|r| r.access == Access::SelfService), "{inventory:?}");

    let b_id = tenant_b.to_string();
    for route in &inventory {
        let path = b.path(route);
        let body = b.body(route);
        let what = format!("{} {}", route.method, route.path);
        let (status, _) = app.send(route.method.clone(), &path, None, body.as_ref()).await;
        match route.access {
            Access::Public => {
                assert_ne!(status, 401, "{what} is public");
                continue;
            }
            Access::Authenticated | Access::SelfService => assert_eq!(status, 401, "{what} without a token"),
        }
        if route.access == Access::SelfService {
            // Every role may call it, about itself only (fresh sign-ins: sign-out ends one).
            for email in ["admin@a.example", "customer@a.example"] {
                let token = app.token_for(email, dotmac_tests::USER_PASSWORD).await;
                let (status, answer) =
                    app.send(route.method.clone(), &path, Some(&token), body.as_ref()).await;
                // Allowed for every role (a 422 for this generic body still means "let in").
                assert!(!matches!(status, 401 | 403), "{what} for {email} answered {status}: {answer}");
                assert!(!answer.to_string().contains(&b_id), "{what} leaked tenant B: {answer}");
            }
            continue;
        }
        // Tenant A's admin, A's container and a partner that did not bring B, against B's
        // objects: refused, or (for A's own collection) an answer that does not mention B.
        for (who, token) in
            [("A's admin", &a_admin), ("A's machine", &a_machine), ("another partner", &stranger_partner)]
        {
            let (status, answer) = app.send(route.method.clone(), &path, Some(token), body.as_ref()).await;
            assert!(!answer.to_string().contains(&b_id), "{what} leaked tenant B to {who}: {answer}");
            assert!(!answer.to_string().contains(&b_user), "{what} leaked B's user to {who}: {answer}");
            if TenantB::addresses_b(route) {
                assert!(matches!(status, 403 | 404), "{what} as {who} answered {status}: {answer}");
            }
        }
        // A customer user reaches no admin route.
        let (status, answer) = app.send(route.method.clone(), &path, Some(&a_customer), body.as_ref()).await;
        assert_eq!(status, 403, "{what} as a customer user answered {status}: {answer}");
    }

    // B is as it was: tenant, user, role, health.
    let store = &app.stack.platform.store;
    let b_after = store.get_tenant(tenant_b).await.expect("get").expect("exists");
    assert_eq!(
        (b_after.slug, b_after.name, b_after.version),
        (b_before.slug, b_before.name, b_after.version)
    );
    let user = store
        .get_user(&dotmac_store::UserHome::Tenant(tenant_b), &b_user)
        .await
        .expect("get")
        .expect("B's user still exists");
    assert!(user.active);
    assert_eq!(user.roles, vec![RoleName::from(Role::CustomerUser)]);
    let role = store.get_role(tenant_b, &RoleName::parse(b_role).expect("name")).await.expect("get");
    assert!(role.is_some_and(|r| r.role.permissions[0].action.is_none()), "B's role unchanged");
    assert_eq!(store.latest_heartbeat(tenant_b).await.expect("get"), None);
    let (_, users) =
        app.send(Method::GET, &format!("/v1/users?tenant_id={tenant_b}"), Some(&admin), None).await;
    assert_eq!(users["items"].as_array().map(Vec::len), Some(1), "nobody added users to B: {users}");
    app.shutdown().await;
}
