//! `/v1/users`, `/v1/roles` and inviting: management scoped by the caller's rights, custom
//! roles that apply at once, no escalation and no mass assignment. A tenant's admin creates
//! accounts by inviting (the invitee accepts with a password); platform staff also create
//! them directly. `invitations.rs` holds the invitation's own rules.

use dotmac_domain::Role;
use dotmac_tests::{TestApp, USER_PASSWORD};
use http::Method;
use serde_json::{Value, json};

async fn tenant_with_admin(app: &TestApp, email: &str) -> (dotmac_domain::TenantId, String) {
    let admin = app.admin_token().await;
    let tenant = app.onboarded_tenant(&admin).await;
    (tenant, app.user_token(email, tenant, Role::TenantAdmin).await)
}

/// The password of every account these tests create through the API.
const PASSWORD: &str = "correct-horse-battery";

fn new_user(email: &str, roles: &[&str]) -> Value {
    json!({ "email": email, "password": PASSWORD, "roles": roles })
}

/// A tenant's admin creates accounts by inviting: the invitee accepts with `PASSWORD`.
async fn invite_and_accept(app: &TestApp, admin: &str, email: &str, roles: &[&str]) -> Value {
    app.invite_and_accept(admin, email, roles, PASSWORD).await
}

async fn invite(app: &TestApp, token: &str, email: &str, roles: &[&str]) -> (u16, Value) {
    let answer = app.invite(token, &json!({ "email": email, "roles": roles })).await;
    (answer.status, answer.json)
}

#[tokio::test]
async fn a_tenant_admin_manages_its_own_users_only() {
    let app = TestApp::spawn().await;
    let (tenant, admin) = tenant_with_admin(&app, "boss@users-a.example").await;
    let (other_tenant, other_admin) = tenant_with_admin(&app, "boss@users-b.example").await;

    // Not directly: a tenant's admin invites.
    let answer = app
        .exchange(
            Method::POST,
            "/v1/users",
            Some(&admin),
            Some(&new_user("agent@users-a.example", &["customer_user"])),
        )
        .await;
    answer.assert_error(403, "FORBIDDEN");
    assert_eq!(answer.json["error"]["details"]["invite"], json!("/v1/invitations"), "{}", answer.text);
    let created = invite_and_accept(&app, &admin, "agent@users-a.example", &["customer_user"]).await;
    assert_eq!(created["tenant_id"], json!(tenant), "created in the caller's tenant");
    assert!(created.get("password_hash").is_none());
    let id = created["id"].as_str().expect("id").to_owned();

    // The same e-mail again is a conflict, told to whoever accepts; a weak password is
    // refused with its field.
    let (status, _) = invite(&app, &admin, "agent@users-a.example", &["customer_user"]).await;
    assert_eq!(status, 202, "inviting says nothing of the address");
    let again = dotmac_tests::invitation_token(&app.invitation_link("agent@users-a.example").await);
    let answer = app.accept_invitation(&again, PASSWORD).await;
    answer.assert_error(409, "ALREADY_EXISTS");
    let (status, _) = invite(&app, &admin, "weak@users-a.example", &["customer_user"]).await;
    assert_eq!(status, 202);
    let weak = dotmac_tests::invitation_token(&app.invitation_link("weak@users-a.example").await);
    let answer = app.accept_invitation(&weak, "short").await;
    assert_eq!(answer.status, 422, "{}", answer.text);

    let (status, list) = app.send(Method::GET, "/v1/users", Some(&admin), None).await;
    assert_eq!(status, 200, "{list}");
    let emails: Vec<&str> =
        list["items"].as_array().expect("items").iter().filter_map(|u| u["email"].as_str()).collect();
    assert_eq!(emails.len(), 2, "the admin and the new user: {emails:?}");
    assert!(!emails.contains(&"boss@users-b.example"));

    // The new user signs in with the password it chose.
    let response = app.login("agent@users-a.example", PASSWORD).await;
    assert_eq!(response.status(), 200);

    // Another tenant's admin cannot see, change or delete it.
    for (method, body) in
        [(Method::GET, None), (Method::PATCH, Some(json!({ "active": false }))), (Method::DELETE, None)]
    {
        let (status, answer) =
            app.send(method.clone(), &format!("/v1/users/{id}"), Some(&other_admin), body.as_ref()).await;
        assert_eq!(status, 404, "{method} by another tenant: {answer}");
    }
    let (status, _) =
        app.send(Method::GET, &format!("/v1/users?tenant_id={tenant}"), Some(&other_admin), None).await;
    assert_eq!(status, 403);
    let _ = other_tenant;

    // Deactivated, it can no longer sign in; deleted, its e-mail is free again.
    let (status, updated) = app
        .send(Method::PATCH, &format!("/v1/users/{id}"), Some(&admin), Some(&json!({ "active": false })))
        .await;
    assert_eq!((status, updated["active"].clone()), (200, json!(false)), "{updated}");
    assert_eq!(app.login("agent@users-a.example", PASSWORD).await.status(), 401);
    let (status, _) = app.send(Method::DELETE, &format!("/v1/users/{id}"), Some(&admin), None).await;
    assert_eq!(status, 204);
    let (status, _) = app.send(Method::GET, &format!("/v1/users/{id}"), Some(&admin), None).await;
    assert_eq!(status, 404);
    // The pending invitation to the address accepts now that the address is free.
    let answer = app.accept_invitation(&again, PASSWORD).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    app.shutdown().await;
}

#[tokio::test]
async fn no_body_sets_roles_tenant_or_identity_it_should_not() {
    let app = TestApp::spawn().await;
    let (tenant, admin) = tenant_with_admin(&app, "boss@mass-a.example").await;
    let admin_id = app.get_json(&admin, "/v1/auth/me").await.1["id"].as_str().expect("id").to_owned();
    let (other_tenant, _) = tenant_with_admin(&app, "boss@mass-b.example").await;
    let customer = app.user_token("customer@mass-a.example", tenant, Role::CustomerUser).await;
    let customer_id = app.get_json(&customer, "/v1/auth/me").await.1["id"].as_str().expect("id").to_owned();

    // A user cannot give itself roles, whoever it is.
    let (status, answer) = app
        .send(
            Method::PATCH,
            &format!("/v1/users/{customer_id}"),
            Some(&customer),
            Some(&json!({ "roles": ["tenant_admin"] })),
        )
        .await;
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = app
        .send(
            Method::PATCH,
            &format!("/v1/users/{admin_id}"),
            Some(&admin),
            Some(&json!({ "roles": ["customer_user"] })),
        )
        .await;
    assert_eq!(status, 403, "even an admin leaves its own roles alone: {answer}");

    // Fields the platform owns are refused outright, by name, on every body.
    for field in [
        json!({ "tenant_id": other_tenant }),
        json!({ "id": "someone-else" }),
        json!({ "email": "new@mass-a.example" }),
        json!({ "password_hash": "$argon2id$forged" }),
        json!({ "partner_id": "acme" }),
        json!({ "created_at": "2020-01-01T00:00:00Z" }),
    ] {
        for (who, token, target) in [("customer", &customer, &customer_id), ("admin", &admin, &customer_id)] {
            let (status, answer) =
                app.send(Method::PATCH, &format!("/v1/users/{target}"), Some(token), Some(&field)).await;
            assert!(matches!(status, 403 | 422), "{who} PATCH {field}: {status} {answer}");
        }
    }
    // An invitation sets the e-mail, the roles and the home, nothing else: not a password
    // (the invitee sets it), a hash, an id, an expiry or a token.
    for (field, value) in [
        ("password", json!(PASSWORD)),
        ("password_hash", json!("$argon2id$forged")),
        ("id", json!("chosen-id")),
        ("expires_at", json!("2099-01-01T00:00:00Z")),
        ("token_digest", json!("forged")),
        ("delivery", json!("sent")),
    ] {
        let mut body = json!({ "email": "sneaky@mass-a.example", "roles": ["customer_user"] });
        body[field] = value;
        let answer = app.invite(&admin, &body).await;
        answer.assert_error(422, "VALIDATION_FAILED");
        assert_eq!(answer.json["error"]["details"]["field"], json!(field), "{}", answer.text);
    }
    let mut create = new_user("sneaky@mass-a.example", &["customer_user"]);
    create["password_hash"] = json!("$argon2id$forged");
    let admin_of_platform = app.admin_token().await;
    let (status, answer) = app.send(Method::POST, "/v1/users", Some(&admin_of_platform), Some(&create)).await;
    assert_eq!(
        (status, answer["error"]["details"]["field"].clone()),
        (422, json!("password_hash")),
        "{answer}"
    );
    // A tenant admin cannot invite into another tenant by naming it.
    let elsewhere =
        json!({ "email": "planted@mass-b.example", "roles": ["tenant_admin"], "tenant_id": other_tenant });
    app.invite(&admin, &elsewhere).await.assert_error(403, "FORBIDDEN");
    assert!(app.emails_to("planted@mass-b.example").await.is_empty(), "no invitation went out");
    let (_, pending) =
        app.get_json(&admin_of_platform, &format!("/v1/invitations?tenant_id={other_tenant}")).await;
    assert_eq!(pending["items"], json!([]), "nothing was recorded in the other tenant: {pending}");

    // Nothing changed.
    let (_, me) = app.get_json(&customer, "/v1/auth/me").await;
    assert_eq!((me["roles"].clone(), me["tenant_id"].clone()), (json!(["customer_user"]), json!(tenant)));
    assert_eq!(me["email"], json!("customer@mass-a.example"));
    assert_eq!(app.login("customer@mass-a.example", USER_PASSWORD).await.status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn roles_are_handed_out_only_within_ones_own_rights() {
    let app = TestApp::spawn().await;
    let (_, admin) = tenant_with_admin(&app, "boss@escalate.example").await;
    for roles in [["platform_admin"], ["partner"], ["tenant_machine"]] {
        let answer = app.invite(&admin, &json!({ "email": "up@escalate.example", "roles": roles })).await;
        answer.assert_error(403, "FORBIDDEN");
    }
    let (_, pending) = app.get_json(&admin, "/v1/invitations").await;
    assert_eq!(pending["items"], json!([]), "nobody was invited: {pending}");
    assert!(app.emails_to("up@escalate.example").await.is_empty(), "no invitation went out");
    let (status, answer) = invite(&app, &admin, "up@escalate.example", &["ghost-role"]).await;
    assert_eq!((status, answer["error"]["details"]["field"].clone()), (422, json!("roles")), "{answer}");
    // A custom role reaches no further than the tenant.
    let global =
        json!({ "name": "overlord", "permissions": [{ "resource": "*", "action": "*", "scope": "global" }] });
    let answer = app.exchange(Method::POST, "/v1/roles", Some(&admin), Some(&global)).await;
    answer.assert_error(422, "VALIDATION_FAILED");
    assert_eq!(app.get_json(&admin, "/v1/roles/overlord").await.0, 404, "nothing was defined");
    for name in ["tenant_admin", "platform_admin"] {
        let answer = app.exchange(Method::DELETE, &format!("/v1/roles/{name}"), Some(&admin), None).await;
        answer.assert_error(403, "FORBIDDEN");
        assert_eq!(app.get_json(&admin, &format!("/v1/roles/{name}")).await.0, 200, "built-in {name} stays");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_custom_role_grants_what_it_defines_and_a_change_applies_at_once() {
    let app = TestApp::spawn().await;
    let (tenant, admin) = tenant_with_admin(&app, "boss@custom.example").await;
    let auditor = json!({
        "name": "user-auditor",
        "description": "reads the tenant's users",
        "permissions": [{ "resource": "user", "action": "read", "scope": "tenant" }],
    });
    let (status, role) = app.send(Method::POST, "/v1/roles", Some(&admin), Some(&auditor)).await;
    assert_eq!((status, role["tenant_id"].clone()), (201, json!(tenant)), "{role}");
    let (status, _) = app.send(Method::POST, "/v1/roles", Some(&admin), Some(&auditor)).await;
    assert_eq!(status, 200, "the same definition again is a retry");
    let (status, roles) = app.send(Method::GET, "/v1/roles", Some(&admin), None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> =
        roles["items"].as_array().expect("items").iter().filter_map(|r| r["name"].as_str()).collect();
    assert!(names.contains(&"user-auditor") && names.contains(&"tenant_admin"), "{names:?}");

    let created = invite_and_accept(&app, &admin, "auditor@custom.example", &["user-auditor"]).await;
    assert_eq!(created["roles"], json!(["user-auditor"]), "{created}");
    let token = app.token_for("auditor@custom.example", PASSWORD).await;
    let (status, users) = app.send(Method::GET, "/v1/users", Some(&token), None).await;
    assert_eq!(status, 200, "the custom role lets it read users: {users}");
    let (status, _) = invite(&app, &token, "x@custom.example", &["customer_user"]).await;
    assert_eq!(status, 403, "but not invite them");
    let (status, _) = app.send(Method::GET, &format!("/v1/tenants/{tenant}"), Some(&token), None).await;
    assert_eq!(status, 403, "nor read the tenant");

    // Narrowed: the same token loses the right on its next request, no sign-in needed.
    let narrowed = json!({ "permissions": [{ "resource": "invoice", "action": "read", "scope": "tenant" }] });
    let (status, answer) =
        app.send(Method::PUT, "/v1/roles/user-auditor", Some(&admin), Some(&narrowed)).await;
    assert_eq!(status, 200, "{answer}");
    let (status, _) = app.send(Method::GET, "/v1/users", Some(&token), None).await;
    assert_eq!(status, 403);
    // Deleted: it grants nothing at all.
    let (status, _) = app.send(Method::DELETE, "/v1/roles/user-auditor", Some(&admin), None).await;
    assert_eq!(status, 204);
    let (status, _) = app.send(Method::GET, "/v1/roles/user-auditor", Some(&admin), None).await;
    assert_eq!(status, 404);
    app.shutdown().await;
}

#[tokio::test]
async fn platform_staff_manage_users_anywhere() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let tenant = app.onboarded_tenant(&admin).await;
    let mut body = new_user("first-admin@staff.example", &["tenant_admin"]);
    body["tenant_id"] = json!(tenant);
    let (status, created) = app.send(Method::POST, "/v1/users", Some(&admin), Some(&body)).await;
    assert_eq!((status, created["tenant_id"].clone()), (201, json!(tenant)), "{created}");
    let id = created["id"].as_str().expect("id");
    let (status, found) = app.send(Method::GET, &format!("/v1/users/{id}"), Some(&admin), None).await;
    assert_eq!(
        (status, found["email"].clone()),
        (200, json!("first-admin@staff.example")),
        "found by id alone"
    );
    let (status, list) =
        app.send(Method::GET, &format!("/v1/users?tenant_id={tenant}"), Some(&admin), None).await;
    assert_eq!((status, list["items"].as_array().map(Vec::len)), (200, Some(1)), "{list}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_narrow_role_touches_no_one_and_nothing_that_holds_more() {
    let app = TestApp::spawn().await;
    let (_, admin) = tenant_with_admin(&app, "boss@narrow.example").await;
    let admin_id = app.get_json(&admin, "/v1/auth/me").await.1["id"].as_str().expect("id").to_owned();
    for (name, resource) in [("user-editor", "user"), ("role-editor", "role"), ("powerful", "*")] {
        let body = json!({ "name": name, "permissions": [{ "resource": resource, "action": "update", "scope": "tenant" }] });
        let (status, answer) = app.send(Method::POST, "/v1/roles", Some(&admin), Some(&body)).await;
        assert_eq!(status, 201, "{answer}");
    }
    invite_and_accept(&app, &admin, "editor@narrow.example", &["user-editor", "role-editor"]).await;
    let editor = app.token_for("editor@narrow.example", PASSWORD).await;

    // Updating users is not enough to lock out an admin (or re-enable one), ...
    let (status, answer) = app
        .send(
            Method::PATCH,
            &format!("/v1/users/{admin_id}"),
            Some(&editor),
            Some(&json!({ "active": false })),
        )
        .await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(app.get_json(&admin, "/v1/auth/me").await.1["active"], json!(true));
    // ... and updating roles is not enough to rewrite one that grants more.
    let narrowed = json!({ "permissions": [{ "resource": "role", "action": "update", "scope": "tenant" }] });
    let (status, answer) = app.send(Method::PUT, "/v1/roles/powerful", Some(&editor), Some(&narrowed)).await;
    assert_eq!(status, 403, "{answer}");
    let (_, role) = app.get_json(&admin, "/v1/roles/powerful").await;
    assert_eq!(role["permissions"][0]["resource"], json!("*"), "unchanged: {role}");
    app.shutdown().await;
}

/// Bad input on the identity routes is a 422 naming what is wrong, before anything is written.
#[tokio::test]
async fn bad_input_is_refused_with_the_field_named() {
    let app = TestApp::spawn().await;
    let (tenant, admin) = tenant_with_admin(&app, "boss@bad-input.example").await;
    let created = invite_and_accept(&app, &admin, "someone@bad-input.example", &["customer_user"]).await;
    let user = created["id"].as_str().expect("id").to_owned();
    let cases: Vec<(Method, String, Option<Value>, &str)> = vec![
        (
            Method::POST,
            "/v1/invitations".into(),
            Some(json!({ "email": "not-an-email", "roles": ["customer_user"] })),
            "email",
        ),
        (
            Method::POST,
            "/v1/invitations".into(),
            Some(json!({ "email": "x@bad-input.example", "roles": ["Not A Role"] })),
            "roles",
        ),
        (
            Method::POST,
            "/v1/invitations".into(),
            Some(json!({ "email": "x@bad-input.example", "roles": [] })),
            "roles",
        ),
        (Method::GET, "/v1/invitations?limit=0".into(), None, "limit"),
        (Method::GET, "/v1/invitations?cursor=not-ours".into(), None, "cursor"),
        (Method::DELETE, "/v1/invitations/not-a-uuid".into(), None, "invitation_id"),
        (Method::POST, "/v1/invitations/not-a-uuid/resend".into(), None, "invitation_id"),
        (Method::PATCH, format!("/v1/users/{user}"), Some(json!({ "roles": ["BAD"] })), "roles"),
        (Method::PATCH, format!("/v1/users/{user}"), Some(json!({ "active": "yes" })), "active"),
        (Method::GET, "/v1/users?limit=0".into(), None, "limit"),
        (Method::GET, "/v1/users?cursor=not-ours".into(), None, "cursor"),
        (Method::GET, "/v1/roles?tenant_id=not-a-uuid".into(), None, "tenant_id"),
        (
            Method::POST,
            "/v1/roles".into(),
            Some(
                json!({ "name": "Bad Name", "permissions": [{ "resource": "user", "action": "read", "scope": "tenant" }] }),
            ),
            "name",
        ),
        (
            Method::POST,
            "/v1/roles".into(),
            Some(json!({ "name": "empty", "permissions": [] })),
            "permissions",
        ),
        (
            Method::POST,
            "/v1/roles".into(),
            Some(
                json!({ "name": "typo", "permissions": [{ "resource": "usr", "action": "read", "scope": "tenant" }] }),
            ),
            "permissions",
        ),
        (
            Method::POST,
            format!("/v1/tenants/{tenant}/health"),
            Some(json!({ "status": "on fire" })),
            "status",
        ),
        (
            Method::POST,
            format!("/v1/tenants/{tenant}/health"),
            Some(json!({ "status": "healthy", "detail": "x".repeat(501) })),
            "detail",
        ),
        (Method::GET, "/v1/tenants/not-a-uuid/health".into(), None, "id"),
    ];
    for (method, path, body, field) in cases {
        let (status, answer) = app.send(method.clone(), &path, Some(&admin), body.as_ref()).await;
        assert_eq!(status, 422, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], json!("VALIDATION_FAILED"), "{method} {path}: {answer}");
        let named = answer["error"]["details"]["field"].as_str().unwrap_or_default().to_owned();
        let message = answer["error"]["message"].as_str().unwrap_or_default().to_owned();
        assert!(
            named.contains(field) || message.contains(field),
            "{method} {path} should name {field}: {answer}"
        );
    }
    let (_, users) = app.send(Method::GET, "/v1/users", Some(&admin), None).await;
    assert_eq!(users["items"].as_array().map(Vec::len), Some(2), "nothing was created: {users}");
    let (_, pending) = app.get_json(&admin, "/v1/invitations").await;
    assert_eq!(pending["items"], json!([]), "nobody was invited: {pending}");
    assert_eq!(app.stack.platform.store.latest_heartbeat(tenant).await.expect("get"), None);
    app.shutdown().await;
}

/// Nobody changes their own status: neither a tenant's admin nor the platform's (who may
/// change anyone else's) can deactivate or reactivate itself, and the refusal leaves it as
/// it was.
#[tokio::test]
async fn nobody_changes_their_own_status() {
    let app = TestApp::spawn().await;
    let (_, tenant_admin) = tenant_with_admin(&app, "boss@own-status.example").await;
    let platform_admin = app.admin_token().await;
    for token in [&tenant_admin, &platform_admin] {
        let id = app.get_json(token, "/v1/auth/me").await.1["id"].as_str().expect("id").to_owned();
        for active in [false, true] {
            let body = json!({ "active": active });
            let answer =
                app.exchange(Method::PATCH, &format!("/v1/users/{id}"), Some(token), Some(&body)).await;
            answer.assert_error(403, "FORBIDDEN");
        }
        let (status, me) = app.get_json(token, "/v1/auth/me").await;
        assert_eq!((status, me["active"].clone()), (200, json!(true)), "{me}");
    }
    app.shutdown().await;
}

/// The user list pages by `next_cursor` over HTTP: 7 users at 3 a page are 3 pages, every
/// user once, and the last page says there is no next one.
#[tokio::test]
async fn the_user_list_pages_without_gaps_or_repeats_and_never_shows_a_hash() {
    let app = TestApp::spawn().await;
    let (tenant, admin) = tenant_with_admin(&app, "boss@pages.example").await;
    let admin_id = app.get_json(&admin, "/v1/auth/me").await.1["id"].as_str().expect("id").to_owned();
    let mut expected = vec![admin_id];
    for i in 0..6 {
        expected.push(
            app.create_user(&format!("user-{i}@pages.example"), Some(tenant), None, &["customer_user"]).await,
        );
    }
    expected.sort();

    let mut seen = Vec::new();
    let mut pages = 0;
    let mut path = "/v1/users?limit=3".to_owned();
    loop {
        let answer = app.exchange(Method::GET, &path, Some(&admin), None).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        // The raw text, not the parsed body: no field of any name may carry a hash.
        for secret in ["password", "argon2"] {
            assert!(!answer.text.contains(secret), "a user list shows {secret}: {}", answer.text);
        }
        let items = answer.json["items"].as_array().expect("items").clone();
        assert!(items.len() <= 3, "{}", answer.text);
        seen.extend(items.iter().map(|u| u["id"].as_str().expect("id").to_owned()));
        pages += 1;
        assert!(pages <= 3, "more pages than 7 users at 3 a page need: {seen:?}");
        match answer.json["next_cursor"].as_str() {
            Some(cursor) => path = dotmac_tests::with_query("/v1/users?limit=3", "cursor", cursor),
            None => break,
        }
    }
    assert_eq!(pages, 3, "{seen:?}");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "a user listed twice: {seen:?}");
    assert_eq!(sorted, expected, "every user, once");

    for path in ["/v1/users?limit=101", "/v1/tenants?limit=101"] {
        let answer = app.exchange(Method::GET, path, Some(&admin), None).await;
        answer.assert_error(422, "VALIDATION_FAILED");
        assert_eq!(answer.json["error"]["details"]["field"], "limit", "{path}: {}", answer.text);
    }
    app.shutdown().await;
}

/// A weak password is refused naming the field the client sent: on platform staff's direct
/// `POST /v1/users` and on an invitee's acceptance alike.
#[tokio::test]
async fn a_weak_password_on_a_new_user_names_the_password_field() {
    let app = TestApp::spawn().await;
    let (tenant, admin) = tenant_with_admin(&app, "boss@weak.example").await;
    let staff = app.admin_token().await;
    let weak = json!({ "email": "weak@weak.example", "password": "password1234", "roles": ["customer_user"], "tenant_id": tenant });
    let answer = app.exchange(Method::POST, "/v1/users", Some(&staff), Some(&weak)).await;
    answer.assert_error(422, "VALIDATION_FAILED");
    assert_eq!(answer.json["error"]["details"]["field"], "password", "{}", answer.text);
    let (status, _) = invite(&app, &admin, "weak@weak.example", &["customer_user"]).await;
    assert_eq!(status, 202);
    let token = dotmac_tests::invitation_token(&app.invitation_link("weak@weak.example").await);
    let answer = app.accept_invitation(&token, "password1234").await;
    answer.assert_error(422, "VALIDATION_FAILED");
    assert_eq!(answer.json["error"]["details"]["field"], "password", "{}", answer.text);
    app.shutdown().await;
}

/// Custom roles: the same name with another definition is a 409 that leaves the first alone;
/// nobody defines a role granting more than they hold; built-in roles are read-only.
#[tokio::test]
async fn custom_role_definitions_conflict_stay_within_the_definer_and_spare_built_ins() {
    let app = TestApp::spawn().await;
    let (tenant, admin) = tenant_with_admin(&app, "boss@definitions.example").await;
    let reader = json!({ "name": "invoice-reader", "permissions": [{ "resource": "invoice", "action": "read", "scope": "tenant" }] });
    let (status, created) = app.send(Method::POST, "/v1/roles", Some(&admin), Some(&reader)).await;
    assert_eq!(status, 201, "{created}");
    let other = json!({ "name": "invoice-reader", "permissions": [{ "resource": "user", "action": "read", "scope": "tenant" }] });
    let answer = app.exchange(Method::POST, "/v1/roles", Some(&admin), Some(&other)).await;
    answer.assert_error(409, "ALREADY_EXISTS");
    assert_eq!(answer.json["error"]["details"]["field"], "name", "{}", answer.text);
    let (_, stored) = app.get_json(&admin, "/v1/roles/invoice-reader").await;
    assert_eq!(stored["permissions"], created["permissions"], "the first definition stands: {stored}");

    // A role-maker holds only "create roles": a role granting user reads is beyond it, one
    // granting what it holds is not (so the refusal is about the grant, not the right to create).
    let maker = json!({ "name": "role-maker", "permissions": [{ "resource": "role", "action": "create", "scope": "tenant" }] });
    assert_eq!(app.send(Method::POST, "/v1/roles", Some(&admin), Some(&maker)).await.0, 201);
    app.create_user("maker@definitions.example", Some(tenant), None, &["role-maker"]).await;
    let token = app.token_for("maker@definitions.example", USER_PASSWORD).await;
    let beyond = json!({ "name": "user-reader", "permissions": [{ "resource": "user", "action": "read", "scope": "tenant" }] });
    let answer = app.exchange(Method::POST, "/v1/roles", Some(&token), Some(&beyond)).await;
    answer.assert_error(403, "FORBIDDEN");
    assert_eq!(app.get_json(&admin, "/v1/roles/user-reader").await.0, 404, "nothing was defined");
    let within = json!({ "name": "maker-too", "permissions": [{ "resource": "role", "action": "create", "scope": "tenant" }] });
    let (status, answer) = app.send(Method::POST, "/v1/roles", Some(&token), Some(&within)).await;
    assert_eq!(status, 201, "{answer}");

    // Built-in roles: no PUT, no DELETE, even by the tenant's admin, and they stay as they were.
    let (_, builtin_before) = app.get_json(&admin, "/v1/roles/customer_user").await;
    let narrowed = json!({ "permissions": [{ "resource": "invoice", "action": "read", "scope": "own" }] });
    for name in ["customer_user", "tenant_admin"] {
        let answer =
            app.exchange(Method::PUT, &format!("/v1/roles/{name}"), Some(&admin), Some(&narrowed)).await;
        answer.assert_error(403, "FORBIDDEN");
    }
    let (status, builtin_after) = app.get_json(&admin, "/v1/roles/customer_user").await;
    assert_eq!((status, &builtin_after), (200, &builtin_before));
    assert_eq!(builtin_after["builtin"], json!(true), "{builtin_after}");
    app.shutdown().await;
}
