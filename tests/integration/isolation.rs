//! Tenant isolation on every route: the inventory comes from the router itself, so a route
//! added later is checked without anyone remembering to.

use dotmac_domain::Role;
use dotmac_http::Access;
use dotmac_tests::{TestApp, new_tenant_body};

async fn call(app: &TestApp, method: &http::Method, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = app.http.request(method.clone(), app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if *method == http::Method::POST || *method == http::Method::PUT || *method == http::Method::PATCH {
        request = request.json(&new_tenant_body("usage"));
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn every_route_keeps_tenants_apart_and_roles_in_their_place() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let (tenant_a, tenant_b) = (app.onboarded_tenant(&admin).await, app.onboarded_tenant(&admin).await);
    let b_before = app.stack.platform.store.get_tenant(tenant_b).await.expect("get").expect("exists");
    let a_admin = app.user_token("admin@a.example", tenant_a, Role::TenantAdmin).await;
    let a_customer = app.user_token("customer@a.example", tenant_a, Role::CustomerUser).await;

    let inventory = app.stack.platform.api_routes().inventory;
    let protected: Vec<_> = inventory.iter().filter(|r| r.access == Access::Authenticated).collect();
    assert!(protected.len() >= 3, "the inventory lists the tenant routes: {inventory:?}");
    assert!(inventory.iter().any(|r| r.access == Access::SelfService), "{inventory:?}");

    for route in &inventory {
        let path = route.path.replace("{id}", &tenant_b.to_string());
        let what = format!("{} {}", route.method, route.path);
        let (status, _) = call(&app, &route.method, &path, None).await;
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
                let (status, body) = call(&app, &route.method, &path, Some(&token)).await;
                // Allowed for every role (a 422 for this generic body still means "let in").
                assert!(!matches!(status, 401 | 403), "{what} for {email} answered {status}: {body}");
                assert!(!body.contains(&tenant_b.to_string()), "{what} leaked tenant B: {body}");
            }
            continue;
        }
        // Tenant A's admin against tenant B's objects: refused, or (for a collection) an
        // answer that does not mention B.
        let (status, body) = call(&app, &route.method, &path, Some(&a_admin)).await;
        assert!(!body.contains(&tenant_b.to_string()), "{what} leaked tenant B to tenant A: {body}");
        if route.path.contains("{id}") || route.method != http::Method::GET {
            assert!(matches!(status, 403 | 404), "{what} as tenant A's admin answered {status}: {body}");
        }
        // A customer user reaches no admin route.
        let (status, body) = call(&app, &route.method, &path, Some(&a_customer)).await;
        assert_eq!(status, 403, "{what} as a customer user answered {status}: {body}");
    }
    let b_after = app.stack.platform.store.get_tenant(tenant_b).await.expect("get").expect("exists");
    assert_eq!(b_after.slug, b_before.slug);
    assert_eq!(b_after.name, b_before.name);
    app.shutdown().await;
}
