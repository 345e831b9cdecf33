//! Invitations (issue 9, item 5): an account other than platform staff's comes to be only when
//! its invitee sets a password through a single-use, expiring link sent by SES, and nothing a
//! tenant's admin sees tells whether an address belongs to anyone elsewhere.

use aws_sdk_dynamodb::types::AttributeValue;
use dotmac_domain::{Caller, Email, Role, RoleName, TenantId};
use dotmac_platform::Handler;
use dotmac_store::Delivery;
use dotmac_tests::{Answer, TestApp, invitation_token};
use dotmac_tokens::InvitationToken;
use dotmac_users::NewAccount;
use dotmac_users::invite::InvitationError;
use http::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use time::format_description::well_known::{Rfc2822, Rfc3339};
use time::{Duration, OffsetDateTime};
use tower::ServiceExt;

const PASSWORD: &str = "Velvet-Harbour-Quartz-61";

async fn tenant_with_admin(app: &TestApp, email: &str) -> (TenantId, String) {
    let admin = app.admin_token().await;
    let tenant = app.onboarded_tenant(&admin).await;
    (tenant, app.user_token(email, tenant, Role::TenantAdmin).await)
}

/// Every key of a JSON value, nested ones as paths: what a body's shape is made of.
fn shape(value: &Value, at: &str, keys: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let path = format!("{at}.{key}");
                keys.insert(path.clone());
                shape(inner, &path, keys);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| shape(item, &format!("{at}[]"), keys)),
        _ => {}
    }
}

fn shape_of(value: &Value) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    shape(value, "", &mut keys);
    keys
}

fn header_names(answer: &Answer) -> BTreeSet<String> {
    answer.headers.keys().map(|name| name.as_str().to_owned()).filter(|name| name != "date").collect()
}

/// What an invitation answer says beyond the address and the ids and times every
/// invitation has its own of.
fn said(invitation: &Value) -> Value {
    let seconds = |field: &str| {
        let text = invitation[field].as_str().expect(field);
        OffsetDateTime::parse(text, &Rfc3339).expect(field).unix_timestamp()
    };
    json!({
        "roles": invitation["roles"],
        "tenant_id": invitation["tenant_id"],
        "partner_id": invitation["partner_id"],
        "invited_by": invitation["invited_by"],
        "delivery": invitation["delivery"],
        "lifetime": seconds("expires_at") - seconds("created_at"),
    })
}

#[tokio::test]
async fn an_address_taken_in_another_tenant_answers_exactly_like_a_free_one() {
    let app = TestApp::spawn().await;
    let (tenant_a, a_admin) = tenant_with_admin(&app, "boss@enum-a.example").await;
    let (tenant_b, b_admin) = tenant_with_admin(&app, "boss@enum-b.example").await;
    // The address belongs to an account of tenant B, made the way accounts are made.
    let taken = "taken-1@enum.example";
    let b_user = app.invite_and_accept(&b_admin, taken, &["customer_user"], PASSWORD).await;
    // Same length as the taken one, so not even the sizes of the answers can differ by it.
    let free = "fresh-1@enum.example";

    // A's admin invites both: the same status, headers, shape and content, nothing of B.
    let to_taken = app.invite(&a_admin, &json!({ "email": taken, "roles": ["customer_user"] })).await;
    let to_free = app.invite(&a_admin, &json!({ "email": free, "roles": ["customer_user"] })).await;
    assert_eq!((to_taken.status, to_free.status), (202, 202), "{} / {}", to_taken.text, to_free.text);
    assert_eq!(header_names(&to_taken), header_names(&to_free));
    assert_eq!(shape_of(&to_taken.json), shape_of(&to_free.json));
    assert_eq!(said(&to_taken.json), said(&to_free.json));
    assert_eq!(to_taken.json["tenant_id"], json!(tenant_a));
    assert_eq!(to_taken.json["email"], json!(taken));
    for leak in [tenant_b.to_string(), b_user["id"].as_str().expect("id").to_owned()] {
        assert!(!to_taken.text.contains(&leak), "the answer names B's {leak}: {}", to_taken.text);
    }
    // Both are listed alike, and both invitees got the same e-mail but for address and link.
    let (status, pending) = app.get_json(&a_admin, "/v1/invitations").await;
    assert_eq!(status, 200, "{pending}");
    let listed = pending["items"].as_array().expect("items");
    assert_eq!(listed.len(), 2, "{pending}");
    assert_eq!(shape_of(&listed[0]), shape_of(&listed[1]));
    assert_eq!(said(&listed[0]), said(&listed[1]));
    let (mail_taken, mail_free) = (app.emails_to(taken).await, app.emails_to(free).await);
    // B's invitee got one invitation from B before; A's is the newest.
    assert_eq!((mail_taken.len(), mail_free.len()), (2, 1));
    let (link_taken, link_free) = (app.invitation_link(taken).await, app.invitation_link(free).await);
    // What differs by right: the address, the link, and the expiry the e-mail states.
    let neutral = |mail: &Value, invitation: &Value, link: &str| {
        let expires = invitation["expires_at"].as_str().expect("expires_at");
        let expires =
            OffsetDateTime::parse(expires, &Rfc3339).expect("rfc3339").format(&Rfc2822).expect("rfc2822");
        let body = mail["body"].as_str().expect("body");
        let address = invitation["email"].as_str().expect("email");
        let body = body.replace(link, "LINK").replace(address, "ADDRESS").replace(&expires, "EXPIRY");
        json!({ "source": mail["source"], "subject": mail["subject"], "body": body })
    };
    assert_eq!(
        neutral(&mail_taken[1], &to_taken.json, &link_taken),
        neutral(&mail_free[0], &to_free.json, &link_free)
    );

    // Only the invitee, holding the token, learns the address is taken; the invitation stays.
    let answer = app.accept_invitation(&invitation_token(&link_taken), PASSWORD).await;
    answer.assert_error(409, "ALREADY_EXISTS");
    assert_eq!(answer.json["error"]["details"]["field"], "email", "{}", answer.text);
    let answer = app.accept_invitation(&invitation_token(&link_free), PASSWORD).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let (_, pending) = app.get_json(&a_admin, "/v1/invitations").await;
    assert_eq!(pending["items"].as_array().map(Vec::len), Some(1), "{pending}");
    assert_eq!(pending["items"][0]["email"], json!(taken));

    // B's account is untouched: same tenant, same roles, same password.
    let b_token = app.token_for(taken, PASSWORD).await;
    let (_, me) = app.get_json(&b_token, "/v1/auth/me").await;
    assert_eq!(
        (me["tenant_id"].clone(), me["roles"].clone()),
        (json!(tenant_b), json!(["customer_user"])),
        "{me}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_accepted_invitation_is_an_account_in_the_inviting_tenant_only_and_is_used_up() {
    let app = TestApp::spawn().await;
    let (tenant, admin) = tenant_with_admin(&app, "boss@accept-a.example").await;
    let (other, _) = tenant_with_admin(&app, "boss@accept-b.example").await;
    let email = "new-admin@accept-a.example";
    let invited = app.invite(&admin, &json!({ "email": email, "roles": ["tenant_admin"] })).await;
    assert_eq!((invited.status, invited.json["delivery"].as_str()), (202, Some("sent")), "{}", invited.text);
    let link = app.invitation_link(email).await;

    // The link opens the page in a browser (the token stays in the fragment, never sent).
    let page = app.http.get(&link).send().await.expect("the page");
    assert_eq!(page.status(), 200);
    let content_type = page.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(page.headers().contains_key("content-security-policy"));
    let html = page.text().await.expect("html");
    assert!(html.contains("/v1/invitations/accept") && html.contains("type=\"password\""), "{html}");

    // Wrong tokens: malformed, or well-formed but never issued.
    let token = invitation_token(&link);
    let answer = app.accept_invitation(&token[1..], PASSWORD).await;
    answer.assert_error(422, "VALIDATION_FAILED");
    assert_eq!(answer.json["error"]["details"]["field"], "token", "{}", answer.text);
    let stranger = InvitationToken::generate().expect("token");
    app.accept_invitation(stranger.expose(), PASSWORD).await.assert_error(404, "INVITATION_NOT_FOUND");
    // The password policy, naming the field; the invitation is still good after it.
    for weak in ["short", "password1234", email] {
        let answer = app.accept_invitation(&token, weak).await;
        answer.assert_error(422, "VALIDATION_FAILED");
        assert_eq!(answer.json["error"]["details"]["field"], "password", "{weak}: {}", answer.text);
    }
    assert_eq!(app.login(email, PASSWORD).await.status(), 401, "no account before acceptance");

    let accepted = app.accept_invitation(&token, PASSWORD).await;
    assert_eq!(accepted.status, 201, "{}", accepted.text);
    assert_eq!(
        (accepted.json["email"].clone(), accepted.json["tenant_id"].clone(), accepted.json["roles"].clone()),
        (json!(email), json!(tenant), json!(["tenant_admin"])),
        "{}",
        accepted.text
    );
    assert!(!accepted.text.contains("password") && !accepted.text.contains("argon2"), "{}", accepted.text);
    // Single use: the same token again accepts nothing, and the invitation is no longer pending.
    app.accept_invitation(&token, PASSWORD).await.assert_error(404, "INVITATION_NOT_FOUND");
    let (_, pending) = app.get_json(&admin, "/v1/invitations").await;
    assert_eq!(pending["items"], json!([]), "{pending}");

    // Signed in, it holds its roles in the inviting tenant and nowhere else.
    let signed_in = app.token_for(email, PASSWORD).await;
    let (_, me) = app.get_json(&signed_in, "/v1/auth/me").await;
    assert_eq!(
        (me["tenant_id"].clone(), me["roles"].clone()),
        (json!(tenant), json!(["tenant_admin"])),
        "{me}"
    );
    assert_eq!(app.get_json(&signed_in, &format!("/v1/tenants/{tenant}")).await.0, 200);
    assert_eq!(app.get_json(&signed_in, "/v1/users").await.0, 200);
    assert_eq!(app.get_json(&signed_in, &format!("/v1/users?tenant_id={other}")).await.0, 403);
    assert_eq!(app.get_json(&signed_in, &format!("/v1/tenants/{other}")).await.0, 403);
    app.shutdown().await;
}

#[tokio::test]
async fn concurrent_acceptances_of_one_invitation_make_one_account() {
    let app = TestApp::spawn().await;
    let (_, admin) = tenant_with_admin(&app, "boss@race.example").await;
    let email = "contested@race.example";
    assert_eq!(app.invite(&admin, &json!({ "email": email, "roles": ["customer_user"] })).await.status, 202);
    let token = invitation_token(&app.invitation_link(email).await);
    let attempts = futures::future::join_all((0..6).map(|_| app.accept_invitation(&token, PASSWORD))).await;
    let statuses: Vec<u16> = attempts.iter().map(|answer| answer.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    for answer in attempts.iter().filter(|answer| answer.status != 201) {
        answer.assert_error(404, "INVITATION_NOT_FOUND");
    }
    let (_, users) = app.get_json(&admin, "/v1/users").await;
    let named: Vec<_> =
        users["items"].as_array().expect("items").iter().filter(|u| u["email"] == email).collect();
    assert_eq!(named.len(), 1, "{users}");
    app.shutdown().await;
}

#[tokio::test]
async fn an_expired_invitation_is_refused_by_the_use_case_and_by_the_write_itself() {
    let app = TestApp::spawn().await;
    let (tenant, admin) = tenant_with_admin(&app, "boss@expiry.example").await;
    let admin_id = app.get_json(&admin, "/v1/auth/me").await.1["id"].as_str().expect("id").to_owned();
    let store = &app.stack.platform.store;
    let invitations = app.stack.platform.invitations();
    let caller = Caller::new(admin_id, Some(tenant), &[Role::TenantAdmin]);
    let account = |email: &str| NewAccount {
        email: Email::parse(email).expect("email"),
        roles: vec![RoleName::from(Role::CustomerUser)],
        tenant_id: Some(tenant),
        partner_id: None,
    };

    // Invited eight days ago (the clock is the use case's parameter): a week's link is dead.
    let eight_days_ago = OffsetDateTime::now_utc() - Duration::days(8);
    let late = "late@expiry.example";
    let stale = dotmac_users::invite::invite(store, &invitations, &caller, account(late), eight_days_ago)
        .await
        .expect("invited");
    assert_eq!(stale.delivery, Delivery::Sent);
    let token = invitation_token(&app.invitation_link(late).await);
    app.accept_invitation(&token, PASSWORD).await.assert_error(410, "INVITATION_EXPIRED");
    let (_, pending) = app.get_json(&admin, "/v1/invitations").await;
    assert_eq!(pending["items"], json!([]), "an expired invitation is not pending: {pending}");
    assert_eq!(app.login(late, PASSWORD).await.status(), 401);
    // A resend gives it a new week and a new link; the old link stays dead.
    let resent =
        app.exchange(Method::POST, &format!("/v1/invitations/{}/resend", stale.id), Some(&admin), None).await;
    assert_eq!(resent.status, 202, "{}", resent.text);
    let fresh = invitation_token(&app.invitation_link(late).await);
    assert_ne!(fresh, token);
    app.accept_invitation(&token, PASSWORD).await.assert_error(404, "INVITATION_NOT_FOUND");
    assert_eq!(app.accept_invitation(&fresh, PASSWORD).await.status, 201);

    // Accepted eight days after an invitation made now: refused before any write...
    let soon = "soon@expiry.example";
    assert_eq!(app.invite(&admin, &json!({ "email": soon, "roles": ["customer_user"] })).await.status, 202);
    let token = InvitationToken::parse(&invitation_token(&app.invitation_link(soon).await)).expect("token");
    let in_eight_days = OffsetDateTime::now_utc() + Duration::days(8);
    let refused = dotmac_users::invite::accept(store, &token, PASSWORD.to_owned(), in_eight_days).await;
    assert!(matches!(refused, Err(InvitationError::Expired)), "{refused:?}");
    // ... and by the transaction's own condition, for a writer that did not check first.
    let invitation = store.invitation_by_token(&token.digest()).await.expect("read").expect("pending");
    let user =
        dotmac_users::new_user::user_record(account(soon), "not-a-real-hash".to_owned(), in_eight_days);
    let outcome =
        store.accept_invitation(&invitation, &user, in_eight_days).await.expect("the write answers");
    assert_eq!(outcome, dotmac_store::Acceptance::Gone);
    assert!(store.get_user_by_email(&Email::parse(soon).expect("email")).await.expect("read").is_none());
    // Nothing was written by either refusal: today, the link still works.
    assert_eq!(app.accept_invitation(token.expose(), PASSWORD).await.status, 201);
    app.shutdown().await;
}

#[tokio::test]
async fn a_revoked_invitation_accepts_nothing_and_the_list_pages() {
    let app = TestApp::spawn().await;
    let (tenant, admin) = tenant_with_admin(&app, "boss@revoke-a.example").await;
    let (_, other_admin) = tenant_with_admin(&app, "boss@revoke-b.example").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let answer = app
            .invite(&admin, &json!({ "email": format!("p{i}@revoke-a.example"), "roles": ["customer_user"] }))
            .await;
        assert_eq!(answer.status, 202, "{}", answer.text);
        ids.push(answer.json["id"].as_str().expect("id").to_owned());
    }
    // Two pages of two, every invitation once, in id order.
    let (status, first) = app.get_json(&admin, "/v1/invitations?limit=2").await;
    assert_eq!(status, 200, "{first}");
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let (_, second) =
        app.get_json(&admin, &dotmac_tests::with_query("/v1/invitations?limit=2", "cursor", cursor)).await;
    let seen: Vec<Value> = [&first, &second]
        .iter()
        .flat_map(|page| page["items"].as_array().expect("items").iter().map(|i| i["id"].clone()))
        .collect();
    assert_eq!(seen, ids.iter().map(|id| json!(id)).collect::<Vec<_>>());

    // Another tenant's admin cannot see, revoke or resend them.
    let (status, _) = app.get_json(&other_admin, &format!("/v1/invitations?tenant_id={tenant}")).await;
    assert_eq!(status, 403);
    for (method, path) in [
        (Method::DELETE, format!("/v1/invitations/{}", ids[0])),
        (Method::POST, format!("/v1/invitations/{}/resend", ids[0])),
    ] {
        app.exchange(method, &path, Some(&other_admin), None).await.assert_error(404, "INVITATION_NOT_FOUND");
    }
    // Revoked: the link accepts nothing, a second revoke finds nothing, the list forgets it.
    let token = invitation_token(&app.invitation_link("p0@revoke-a.example").await);
    let answer =
        app.exchange(Method::DELETE, &format!("/v1/invitations/{}", ids[0]), Some(&admin), None).await;
    assert_eq!(answer.status, 204, "{}", answer.text);
    app.accept_invitation(&token, PASSWORD).await.assert_error(404, "INVITATION_NOT_FOUND");
    app.exchange(Method::DELETE, &format!("/v1/invitations/{}", ids[0]), Some(&admin), None)
        .await
        .assert_error(404, "INVITATION_NOT_FOUND");
    let (_, pending) = app.get_json(&admin, "/v1/invitations").await;
    let left: Vec<Value> =
        pending["items"].as_array().expect("items").iter().map(|i| i["id"].clone()).collect();
    assert_eq!(left, vec![json!(ids[1]), json!(ids[2])]);
    assert_eq!(app.login("p0@revoke-a.example", PASSWORD).await.status(), 401);
    app.shutdown().await;
}

/// Sends a request to a router in-process, as the Lambda runtime hands it one.
async fn call(router: &axum::Router, method: Method, path: &str, token: &str, body: &Value) -> (u16, Value) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("answer");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_invitation_goes_out_through_ses_and_a_failed_send_is_kept_for_a_resend() {
    let app = TestApp::spawn().await;
    let (tenant, admin) = tenant_with_admin(&app, "boss@mail.example").await;
    let email = "reader@mail.example";
    let key = [("idempotency-key", "invite-reader-1")];
    let body = json!({ "email": email, "roles": ["customer_user"] });
    let send = || {
        Answer::of(
            app.http
                .post(app.url("/v1/invitations"))
                .bearer_auth(&admin)
                .header(key[0].0, key[0].1)
                .json(&body),
        )
    };
    let (first, retry) = (send().await, send().await);
    assert_eq!((first.status, retry.status), (202, 202), "{}", first.text);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.json["id"], first.json["id"], "a retry is the same invitation");

    // One e-mail, from the configured sender, to the invitee only, linking the accept page.
    let mails = app.emails_to(email).await;
    assert_eq!(mails.len(), 1, "the retry sent nothing: {mails:?}");
    let config = &app.stack.config().invitations;
    assert_eq!(mails[0]["source"], json!(config.sender));
    assert_eq!(mails[0]["destinations"]["ToAddresses"], json!([email]));
    assert_eq!(mails[0]["subject"], "Your invitation to DotMac Platform");
    let link = app.invitation_link(email).await;
    assert!(link.starts_with(&format!("{}#token=", config.accept_url)), "{link}");
    // The token is in the e-mail only: not in the answers, and not in the table, which
    // keeps its SHA-256.
    let token = invitation_token(&link);
    let (_, listed) = app.get_json(&admin, "/v1/invitations").await;
    for text in [&first.text, &listed.to_string()] {
        assert!(!text.contains(&token), "{text}");
    }
    let store = &app.stack.platform.store;
    let items =
        store.client().scan().table_name(store.table()).send().await.expect("scan").items.unwrap_or_default();
    let digest = InvitationToken::parse(&token).expect("token").digest();
    let mut digests = 0;
    for item in &items {
        for value in item.values() {
            if let AttributeValue::S(text) = value {
                assert!(!text.contains(&token), "the table holds the token: {item:?}");
                digests += usize::from(text.contains(&digest));
            }
        }
    }
    assert!(digests >= 2, "the invitation and its token item carry the digest ({digests})");

    // SES refusing the sender (an identity nobody verified): the invitation is still recorded,
    // says so, and a resend through the configured sender delivers it.
    let mut unverified = app.stack.platform.clone();
    unverified.config.invitations.sender = "nobody@unverified-sender.example".to_owned();
    let router = unverified.router(Handler::Users).expect("users router");
    let lost = "lost@mail.example";
    let (status, failed) = call(
        &router,
        Method::POST,
        "/v1/invitations",
        &admin,
        &json!({ "email": lost, "roles": ["customer_user"] }),
    )
    .await;
    assert_eq!((status, failed["delivery"].as_str()), (202, Some("failed")), "{failed}");
    assert!(app.emails_to(lost).await.is_empty());
    let (_, listed) = app.get_json(&admin, "/v1/invitations").await;
    let kept = listed["items"].as_array().expect("items").iter().find(|i| i["email"] == lost).cloned();
    assert_eq!(kept.map(|i| i["delivery"].clone()), Some(json!("failed")), "{listed}");
    let id = failed["id"].as_str().expect("id");
    let resent =
        app.exchange(Method::POST, &format!("/v1/invitations/{id}/resend"), Some(&admin), None).await;
    assert_eq!((resent.status, resent.json["delivery"].as_str()), (202, Some("sent")), "{}", resent.text);
    let accepted = app.accept_invitation(&invitation_token(&app.invitation_link(lost).await), PASSWORD).await;
    assert_eq!(
        (accepted.status, accepted.json["tenant_id"].clone()),
        (201, json!(tenant)),
        "{}",
        accepted.text
    );
    app.shutdown().await;
}

#[tokio::test]
async fn platform_staff_invite_anywhere_and_create_directly_while_partners_invite_no_one() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    // Into a partner's home: the account is that partner's staff.
    let email = "seller@acme-invite.example";
    let invited = app
        .invite(&staff, &json!({ "email": email, "roles": ["partner"], "partner_id": "acme-invite" }))
        .await;
    assert_eq!(
        (invited.status, invited.json["partner_id"].as_str()),
        (202, Some("acme-invite")),
        "{}",
        invited.text
    );
    let accepted =
        app.accept_invitation(&invitation_token(&app.invitation_link(email).await), PASSWORD).await;
    assert_eq!(accepted.status, 201, "{}", accepted.text);
    let partner = app.token_for(email, PASSWORD).await;
    let (_, me) = app.get_json(&partner, "/v1/auth/me").await;
    assert_eq!(
        (me["partner_id"].clone(), me["tenant_id"].clone()),
        (json!("acme-invite"), Value::Null),
        "{me}"
    );
    // A partner's staff manages no users, so invites no one, not even into its own tenants.
    let tenant = app.onboarded_tenant(&partner).await;
    let answer = app
        .invite(
            &partner,
            &json!({ "email": "x@acme-invite.example", "roles": ["customer_user"], "tenant_id": tenant }),
        )
        .await;
    answer.assert_error(403, "FORBIDDEN");
    // Platform staff keep the direct path (seeding): a user at once, with its password.
    let direct = json!({ "email": "seeded@staff-invite.example", "password": PASSWORD, "roles": ["tenant_admin"], "tenant_id": tenant });
    let (status, created) = app.send(Method::POST, "/v1/users", Some(&staff), Some(&direct)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(app.login("seeded@staff-invite.example", PASSWORD).await.status(), 200);
    app.shutdown().await;
}

/// Managing an invitation takes what giving its roles takes: a narrow inviter neither
/// revokes nor resends one that grants more than it holds, and manages those it could give.
#[tokio::test]
async fn a_narrow_inviter_manages_only_invitations_within_its_own_rights() {
    let app = TestApp::spawn().await;
    let (_, admin) = tenant_with_admin(&app, "boss@narrow-invite.example").await;
    let inviter_role = json!({ "name": "inviter", "permissions": [{ "resource": "user", "action": "create", "scope": "tenant" }] });
    assert_eq!(app.send(Method::POST, "/v1/roles", Some(&admin), Some(&inviter_role)).await.0, 201);
    app.invite_and_accept(&admin, "hr@narrow-invite.example", &["inviter"], PASSWORD).await;
    let inviter = app.token_for("hr@narrow-invite.example", PASSWORD).await;

    let admin_invite =
        app.invite(&admin, &json!({ "email": "ops@narrow-invite.example", "roles": ["tenant_admin"] })).await;
    let beyond = admin_invite.json["id"].as_str().expect("id").to_owned();
    app.invite(&inviter, &json!({ "email": "boss2@narrow-invite.example", "roles": ["tenant_admin"] }))
        .await
        .assert_error(403, "FORBIDDEN");
    for (method, path) in [
        (Method::POST, format!("/v1/invitations/{beyond}/resend")),
        (Method::DELETE, format!("/v1/invitations/{beyond}")),
    ] {
        app.exchange(method, &path, Some(&inviter), None).await.assert_error(403, "FORBIDDEN");
    }
    assert_eq!(app.emails_to("ops@narrow-invite.example").await.len(), 1, "nothing was resent");

    let own =
        app.invite(&inviter, &json!({ "email": "hr2@narrow-invite.example", "roles": ["inviter"] })).await;
    assert_eq!(own.status, 202, "{}", own.text);
    let own = own.json["id"].as_str().expect("id").to_owned();
    let resent =
        app.exchange(Method::POST, &format!("/v1/invitations/{own}/resend"), Some(&inviter), None).await;
    assert_eq!(resent.status, 202, "{}", resent.text);
    let revoked = app.exchange(Method::DELETE, &format!("/v1/invitations/{own}"), Some(&inviter), None).await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    let (_, pending) = app.get_json(&admin, "/v1/invitations").await;
    let left: Vec<Value> =
        pending["items"].as_array().expect("items").iter().map(|i| i["id"].clone()).collect();
    assert_eq!(left, vec![json!(beyond)], "{pending}");
    app.shutdown().await;
}
