//! Tenant isolation on every route: the inventory comes from the router itself, so a route
//! added later is checked without anyone remembering to.

use aws_sdk_dynamodb::types::AttributeValue;
use dotmac_domain::{Role, TenantId};
use dotmac_http::{Access, RouteSpec};
use dotmac_store::{HealthStatus, Heartbeat};
use dotmac_tests::{TestApp, new_tenant_body};
use http::Method;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

/// One tenant's objects a route can be aimed at: the tenant, one of its users, one of its
/// custom roles, one of its pending invitations.
struct Objects {
    tenant: TenantId,
    user: String,
    role: &'static str,
    invitation: String,
    /// A completed backup of the tenant (so a restore aimed at it would be accepted if the
    /// policy let the caller through).
    backup: String,
    /// One of its invoices, and a billing run naming it.
    invoice: String,
    run: String,
    /// A partner record of its own (B's is what another partner's staff aim at).
    partner: String,
}

impl Objects {
    /// The route's path and query aimed at these objects.
    fn path(&self, route: &RouteSpec) -> String {
        let mut path = route
            .path
            .replace("{name}", self.role)
            .replace("{invitation_id}", &self.invitation)
            .replace("{backup_id}", &self.backup)
            .replace("{bundle}", "crm");
        path = if route.path.starts_with("/v1/users/") {
            path.replace("{id}", &self.user)
        } else if route.path.starts_with("/v1/plans/") {
            path.replace("{id}", "usage")
        } else if route.path.starts_with("/v1/invoices/") {
            path.replace("{id}", &self.invoice)
        } else if route.path.starts_with("/v1/billing/runs/") {
            path.replace("{id}", &self.run)
        } else if route.path.starts_with("/v1/partners/") {
            path.replace("{id}", &self.partner)
        } else {
            path.replace("{id}", &self.tenant.to_string())
        };
        if ["/v1/users", "/v1/roles", "/v1/invitations"].iter().any(|p| route.path.starts_with(p))
            || route.path == "/v1/invoices"
        {
            path = format!("{path}?tenant_id={}", self.tenant);
        }
        path
    }

    /// A body that would pass validation, aimed at this tenant where a body can name one.
    fn body(&self, route: &RouteSpec) -> Option<Value> {
        if !matches!(route.method, Method::POST | Method::PUT | Method::PATCH) {
            return None;
        }
        let permissions = json!([{ "resource": "invoice", "action": "read", "scope": "tenant" }]);
        let slug = uuid::Uuid::new_v4().simple().to_string();
        let price = json!({ "currency": "USD", "per_customer": { "model": "package", "size": 10, "package_price": "1" } });
        Some(match (route.method.as_str(), route.path.as_str()) {
            ("POST", "/v1/tenants") => new_tenant_body("usage"),
            ("POST", "/v1/users") => json!({
                "email": format!("intruder-{}@b.example", &slug[..8]),
                "password": "a-long-enough-passphrase",
                "roles": ["tenant_admin"],
                "tenant_id": self.tenant,
            }),
            ("PATCH", "/v1/users/{id}") => json!({ "active": false, "roles": ["customer_user"] }),
            ("POST", "/v1/invitations") => json!({
                "email": format!("invitee-{}@b.example", &slug[..8]),
                "roles": ["tenant_admin"],
                "tenant_id": self.tenant,
            }),
            ("POST", "/v1/roles") => {
                json!({ "name": format!("r{}", &slug[..8]), "permissions": permissions, "tenant_id": self.tenant })
            }
            ("PUT", "/v1/roles/{name}") => json!({ "permissions": permissions }),
            ("POST", "/v1/tenants/{id}/health") => json!({ "status": "unhealthy" }),
            ("POST", "/v1/tenants/{id}/scale") => json!({ "task_size": { "cpu": 4096, "memory_mib": 8192 } }),
            ("POST", "/v1/tenants/{id}/plan") => json!({ "plan": "scaled" }),
            ("POST", "/v1/plans") => json!({
                "id": format!("p{}", &slug[..8]),
                "name": "Intruder",
                "task_size": { "cpu": 256, "memory_mib": 512 },
                "price": price,
            }),
            ("POST", "/v1/plans/{id}/prices") => json!({ "price": price }),
            ("POST", "/v1/billing/runs") => json!({ "tenant_ids": [self.tenant] }),
            // Valid bodies: only who asks can refuse a refund or a partner change.
            ("POST", "/v1/invoices/{id}/refunds") => json!({ "amount": 1, "reason": "intruder" }),
            ("POST", "/v1/partners") => json!({
                "id": format!("intruder-{}", &slug[..8]),
                "name": "Intruder",
                "contact_email": "intruder@b.example",
                "commission_rate": "50",
            }),
            ("PATCH", "/v1/partners/{id}") => json!({ "commission_rate": "100", "name": "Intruder" }),
            // A valid rollout, so only who asks can refuse it (platform staff's alone).
            ("POST", "/v1/fleet/rollouts") => {
                json!({ "image": "registry.example/intruder:1", "batch_size": 1 })
            }
            // Valid bodies, so a refusal can only come from who asks: not even a tenant's own
            // admin may suspend, resume (or delete) it.
            ("POST", "/v1/tenants/{id}/suspend") => json!({ "reason": "tenant_request" }),
            ("POST", "/v1/tenants/{id}/resume") => json!({ "reason": "admin" }),
            ("POST", "/v1/usage") => json!({
                "tenant_id": self.tenant,
                "report_id": format!("intruder-{}", &slug[..8]),
                "customer_count": 1,
                "observed_at": time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)
                    .expect("time"),
            }),
            _ => new_tenant_body("usage"),
        })
    }

    /// Whether the request names one of these objects (rather than the caller's own tenant
    /// collection, which a partner may list and add to, or the catalogue, which is no
    /// tenant's: tenant admins and partners read it, and only platform staff change it).
    fn addressed_by(route: &RouteSpec) -> bool {
        route.path != "/v1/tenants" && !route.path.starts_with("/v1/plans") && route.path != "/v1/bundles"
    }
}

/// Every item stored in a tenant's partition (its profile, users, custom roles, health),
/// read fresh and consistently, in key order: the tenant's whole state as the store holds it.
async fn stored_state(app: &TestApp, tenant: TenantId) -> Vec<HashMap<String, AttributeValue>> {
    let store = &app.stack.platform.store;
    let output = store
        .client()
        .query()
        .table_name(store.table())
        .key_condition_expression("PK = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(format!("TENANT#{tenant}")))
        .consistent_read(true)
        .send()
        .await
        .expect("query the tenant's partition");
    assert!(output.last_evaluated_key.is_none(), "one page holds a test tenant's partition");
    output.items.unwrap_or_default()
}

/// The tenant's partition once the platform's own background work on it is done: every
/// event published (the publisher stamps each one) and two reads a few publisher ticks apart
/// alike. Without this, a publisher tick or a license job landing between the snapshot and
/// the check reads as a refused request having written.
async fn settled_state(app: &TestApp, tenant: TenantId) -> Vec<HashMap<String, AttributeValue>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = stored_state(app, tenant).await;
    loop {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let now = stored_state(app, tenant).await;
        let unpublished = now
            .iter()
            .any(|item| item.get("GSI1PK").and_then(|v| v.as_s().ok()).is_some_and(|pk| pk == "OUTBOX"));
        if now == last && !unpublished {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tenant {tenant}'s partition never settled: {}",
            changed_items(&last, &now)
        );
        last = now;
    }
}

/// The keys of the items that differ between two reads of a partition, with both versions.
fn changed_items(
    before: &[HashMap<String, AttributeValue>],
    after: &[HashMap<String, AttributeValue>],
) -> String {
    let key = |item: &HashMap<String, AttributeValue>| {
        item.get("SK").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default()
    };
    let index = |items: &[HashMap<String, AttributeValue>]| {
        items.iter().map(|i| (key(i), i.clone())).collect::<HashMap<_, _>>()
    };
    let (before, after) = (index(before), index(after));
    let mut keys: Vec<_> = before.keys().chain(after.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| before.get(k) != after.get(k))
        .map(|k| format!("{k}: {:?} -> {:?}", before.get(&k), after.get(&k)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Creates a user, a custom role and a pending invitation in `tenant` (so every route has an
/// object to aim at) and waits until the tenant is active (so provisioning no longer writes
/// to it).
async fn furnished(app: &TestApp, admin: &str, tenant: TenantId, label: &str) -> Objects {
    let user =
        app.create_user(&format!("someone@{label}.example"), Some(tenant), None, &["customer_user"]).await;
    let role = if label == "a" { "a-auditor" } else { "b-auditor" };
    let definition = json!({ "name": role, "permissions": [{ "resource": "invoice", "action": "*", "scope": "tenant" }], "tenant_id": tenant });
    let (status, body) = app.send(Method::POST, "/v1/roles", Some(admin), Some(&definition)).await;
    assert_eq!(status, 201, "{body}");
    let invited = json!({ "email": format!("invited@{label}.example"), "roles": ["customer_user"], "tenant_id": tenant });
    let invitation = app.invite(admin, &invited).await;
    assert_eq!(invitation.status, 202, "{}", invitation.text);
    let invitation = invitation.json["id"].as_str().expect("id").to_owned();
    app.wait_for_tenant(admin, &tenant.to_string(), Duration::from_secs(60), |t| t["status"] == "active")
        .await;
    let backup = dotmac_store::BackupRecord::new(
        tenant,
        dotmac_domain::BackupId::generate(),
        dotmac_store::BackupTrigger::OnDemand,
        None,
        time::OffsetDateTime::now_utc(),
    );
    let (mut backup, _) = app.stack.platform.store.create_backup(&backup).await.expect("backup");
    backup.status = dotmac_store::BackupStatus::Completed;
    app.stack.platform.store.save_backup(&mut backup).await.expect("completed");
    // An invoice of the tenant (computed as a run's job would, without a run), and a run
    // record naming it (written directly: no fan-out, so nothing bills behind the test).
    let platform = &app.stack.platform;
    let period = dotmac_billing::Period::containing(time::OffsetDateTime::now_utc()).previous();
    let usage = dotmac_domain::PlanId::parse("usage").expect("plan");
    let now = time::OffsetDateTime::now_utc();
    let invoice =
        platform.billing().invoice_tenant(None, tenant, None, &usage, period, now).await.expect("invoice").id;
    let run = dotmac_store::BillingRun {
        id: uuid::Uuid::now_v7().to_string(),
        period,
        tenant_ids: vec![tenant],
        requested_by: "isolation-test".into(),
        created_at: now,
        cursor: None,
        fanned_out: true,
        tenants_total: 1,
        invoiced: 0,
        failed: 0,
    };
    let event = dotmac_store::OutboxEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        detail_type: "billing.cycle_started".into(),
        source: "dotmac.billing".into(),
        detail: "{}".into(),
        created_at: now,
        published: false,
    };
    platform.store.open_billing_run(&run, &event).await.expect("run");
    let partner = format!("{label}-partner-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let body = json!({ "id": partner, "name": format!("Partner {label}"), "contact_email": format!("ops@{label}-partner.example"), "commission_rate": "10" });
    let (status, created) = app.send(Method::POST, "/v1/partners", Some(admin), Some(&body)).await;
    assert_eq!(status, 201, "{created}");
    Objects {
        tenant,
        user,
        role,
        invitation,
        backup: backup.backup_id.to_string(),
        invoice,
        run: run.id,
        partner,
    }
}

#[tokio::test]
async fn every_route_keeps_tenants_apart_and_roles_in_their_place() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let (tenant_a, tenant_b) = (app.onboarded_tenant(&admin).await, app.onboarded_tenant(&admin).await);
    // A has objects of its own too, so an answer about A could carry B's by mistake.
    furnished(&app, &admin, tenant_a, "a").await;
    let b = furnished(&app, &admin, tenant_b, "b").await;
    // An older report of B's own, so an intruder's report would visibly replace it.
    let b_report = Heartbeat {
        status: HealthStatus::Healthy,
        detail: Some("B's own report".into()),
        reported_at: time::OffsetDateTime::now_utc() - time::Duration::minutes(5),
    };
    app.stack.platform.store.record_heartbeat(tenant_b, &b_report).await.expect("B's report");

    let a_admin = app.user_token("admin@a.example", tenant_a, Role::TenantAdmin).await;
    let a_customer = app.user_token("customer@a.example", tenant_a, Role::CustomerUser).await;
    let (a_machine, _) = app
        .stack
        .platform
        .keys
        .issue_machine(tenant_a, 600, time::OffsetDateTime::now_utc())
        .expect("machine token");
    app.create_user("self-admin@a.example", Some(tenant_a), None, &[Role::TenantAdmin.name()]).await;
    app.create_user("self-customer@a.example", Some(tenant_a), None, &[Role::CustomerUser.name()]).await;
    app.create_user("staff@other-partner.example", None, Some("other-partner"), &["partner"]).await;
    let stranger_partner = app.token_for("staff@other-partner.example", dotmac_tests::USER_PASSWORD).await;

    let inventory = app.stack.platform.api_routes().inventory;
    let protected: Vec<_> = inventory.iter().filter(|r| r.access == Access::Authenticated).collect();
    assert!(protected.len() >= 15, "the inventory lists tenants, users, roles and health: {inventory:?}");
    assert!(inventory.iter().any(|r| r.access == Access::SelfService), "{inventory:?}");

    let b_before = settled_state(&app, tenant_b).await;
    let b_partner = dotmac_domain::PartnerId::parse(&b.partner).expect("partner id");
    let b_partner_before = app.stack.platform.store.get_partner(&b_partner).await.expect("read");
    let b_id = tenant_b.to_string();
    for route in &inventory {
        let path = b.path(route);
        let body = b.body(route);
        let what = format!("{} {}", route.method, route.path);
        let anonymous = app.exchange(route.method.clone(), &path, None, body.as_ref()).await;
        match route.access {
            Access::Public => {
                assert_ne!(anonymous.status, 401, "{what} is public");
                continue;
            }
            Access::Authenticated | Access::SelfService => {
                anonymous.assert_error(401, "UNAUTHENTICATED");
            }
        }
        if route.access == Access::SelfService {
            // Every role may call it, about itself only. Accounts of their own, signed in
            // afresh each time: sign-out ends a session, sign-out everywhere all of them.
            for email in ["self-admin@a.example", "self-customer@a.example"] {
                let token = app.token_for(email, dotmac_tests::USER_PASSWORD).await;
                let answer = app.exchange(route.method.clone(), &path, Some(&token), body.as_ref()).await;
                // Allowed for every role (a 422 for this generic body still means "let in").
                assert!(!matches!(answer.status, 401 | 403), "{what} for {email}: {answer:?}");
                assert!(!answer.text.contains(&b_id), "{what} leaked tenant B: {}", answer.text);
            }
            continue;
        }
        // Tenant A's admin, A's container and a partner that did not bring B, against B's
        // objects: refused, or (for A's own collection) an answer that does not mention B.
        // The raw text is checked, so a leak in a body that is not JSON is caught too.
        for (who, token) in
            [("A's admin", &a_admin), ("A's machine", &a_machine), ("another partner", &stranger_partner)]
        {
            let answer = app.exchange(route.method.clone(), &path, Some(token), body.as_ref()).await;
            assert!(!answer.text.contains(&b_id), "{what} leaked tenant B to {who}: {}", answer.text);
            assert!(!answer.text.contains(&b.user), "{what} leaked B's user to {who}: {}", answer.text);
            assert!(!answer.text.contains(&b.invoice), "{what} leaked B's invoice to {who}: {}", answer.text);
            assert!(
                !answer.text.contains(&b.invitation),
                "{what} leaked B's invitation to {who}: {}",
                answer.text
            );
            assert!(!answer.text.contains("B's own report"), "{what} leaked B's health to {who}");
            if Objects::addressed_by(route) {
                assert!(matches!(answer.status, 403 | 404), "{what} as {who}: {answer:?}");
            } else if route.method != Method::GET && route.path.starts_with("/v1/plans") {
                assert_eq!(answer.status, 403, "{what} as {who} changes the catalogue: {answer:?}");
            }
        }
        // A customer user reaches no admin route, not even aimed at someone else's tenant.
        let answer = app.exchange(route.method.clone(), &path, Some(&a_customer), body.as_ref()).await;
        answer.assert_error(403, "FORBIDDEN");
    }

    // B is exactly as it was: every item of its partition, read fresh from the store.
    let b_after = stored_state(&app, tenant_b).await;
    assert!(b_after == b_before, "tenant B's stored state changed: {}", changed_items(&b_before, &b_after));
    assert_eq!(
        app.stack.platform.store.get_partner(&b_partner).await.expect("read"),
        b_partner_before,
        "B's partner record changed"
    );
    let (_, users) =
        app.send(Method::GET, &format!("/v1/users?tenant_id={tenant_b}"), Some(&admin), None).await;
    assert_eq!(users["items"].as_array().map(Vec::len), Some(1), "nobody added users to B: {users}");
    let (_, invitations) =
        app.send(Method::GET, &format!("/v1/invitations?tenant_id={tenant_b}"), Some(&admin), None).await;
    assert_eq!(
        invitations["items"]
            .as_array()
            .map(|items| items.iter().map(|i| i["id"].clone()).collect::<Vec<_>>()),
        Some(vec![json!(b.invitation)]),
        "nobody invited into B, revoked or resent B's invitation: {invitations}"
    );
    app.shutdown().await;
}

/// The customer-user check above could pass on the tenant check alone (B is not its
/// tenant). Aimed at its own tenant's objects, the refusal can only come from its role.
#[tokio::test]
async fn a_customer_user_reaches_no_admin_route_of_its_own_tenant() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let tenant = app.onboarded_tenant(&admin).await;
    let own = furnished(&app, &admin, tenant, "a").await;
    let customer = app.user_token("customer@a.example", tenant, Role::CustomerUser).await;
    // Its own account's id, so the user routes are tried on itself too.
    let me = app.get_json(&customer, "/v1/auth/me").await.1["id"].as_str().expect("id").to_owned();
    let itself = Objects {
        tenant,
        user: me,
        role: own.role,
        invitation: own.invitation.clone(),
        backup: own.backup.clone(),
        invoice: own.invoice.clone(),
        run: own.run.clone(),
        partner: own.partner.clone(),
    };

    let inventory = app.stack.platform.api_routes().inventory;
    let admin_routes: Vec<_> = inventory.iter().filter(|r| r.access == Access::Authenticated).collect();
    assert!(admin_routes.len() >= 15, "{inventory:?}");
    let before = settled_state(&app, tenant).await;
    for route in admin_routes {
        for objects in [&own, &itself] {
            let path = objects.path(route);
            let answer = app
                .exchange(route.method.clone(), &path, Some(&customer), objects.body(route).as_ref())
                .await;
            assert_eq!(
                answer.status, 403,
                "{} {path} as its own tenant's customer user: {}",
                route.method, answer.text
            );
            answer.assert_error(403, "FORBIDDEN");
        }
    }
    let after = stored_state(&app, tenant).await;
    assert!(after == before, "a refused request changed the tenant: {}", changed_items(&before, &after));
    app.shutdown().await;
}
