//! The partner role: a reseller onboards tenants and sees only the ones it brought.

use dotmac_tests::{TestApp, USER_PASSWORD, new_tenant_body};
use http::Method;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_partner_sees_only_the_tenants_it_brought() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let mut partner_user = json!({ "email": "sales@acme-partner.example", "password": "correct-horse-battery", "roles": ["partner"], "partner_id": "acme" });
    let (status, created) = app.send(Method::POST, "/v1/users", Some(&admin), Some(&partner_user)).await;
    assert_eq!((status, created["partner_id"].clone()), (201, json!("acme")), "{created}");
    partner_user["email"] = json!("rogue@acme-partner.example");
    partner_user["roles"] = json!(["tenant_admin"]);
    let (status, _) = app.send(Method::POST, "/v1/users", Some(&admin), Some(&partner_user)).await;
    assert_eq!(status, 403, "a partner's staff holds partner roles only");
    let partner = app.token_for("sales@acme-partner.example", "correct-horse-battery").await;

    let (status, brought) =
        app.send(Method::POST, "/v1/tenants", Some(&partner), Some(&new_tenant_body("usage"))).await;
    assert_eq!((status, brought["partner_id"].clone()), (202, json!("acme")), "{brought}");
    assert!(brought.get("secret_arn").is_none() && brought.get("failure_reason").is_none(), "{brought}");
    let mut for_other = new_tenant_body("usage");
    for_other["partner_id"] = json!("other");
    let answer = app.exchange(Method::POST, "/v1/tenants", Some(&partner), Some(&for_other)).await;
    answer.assert_error(403, "FORBIDDEN");

    let direct = app.onboarded_tenant(&admin).await;
    let brought_id = brought["id"].as_str().expect("id");
    let (status, list) = app.send(Method::GET, "/v1/tenants?limit=100", Some(&partner), None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> =
        list["items"].as_array().expect("items").iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, vec![brought_id], "only its own tenant");
    // Once active there are platform internals to hide (ARNs, the secret): the partner sees
    // its tenant without them, in the parsed body and in the raw text alike.
    app.wait_for_tenant(&admin, brought_id, Duration::from_secs(60), |t| t["status"] == "active").await;
    let answer = app.exchange(Method::GET, &format!("/v1/tenants/{brought_id}"), Some(&partner), None).await;
    assert_eq!((answer.status, answer.json["status"].clone()), (200, json!("active")), "{}", answer.text);
    assert!(answer.json["container"]["task_size"].is_object(), "{}", answer.text);
    for internal in ["secret_arn", "failure_reason", "version"] {
        assert!(answer.json.get(internal).is_none(), "{internal} hidden from a partner: {}", answer.text);
    }
    assert!(!answer.text.contains("arn:aws"), "no ARN reaches a partner: {}", answer.text);
    let answer = app.exchange(Method::GET, &format!("/v1/tenants/{direct}"), Some(&partner), None).await;
    answer.assert_error(404, "TENANT_NOT_FOUND");
    let (status, _) =
        app.send(Method::GET, &format!("/v1/users?tenant_id={brought_id}"), Some(&partner), None).await;
    assert_eq!(status, 403, "a partner does not manage its tenants' users");

    // Another partner's staff sees none of acme's tenants.
    app.create_user("sales@globex.example", None, Some("globex"), &["partner"]).await;
    let globex = app.token_for("sales@globex.example", USER_PASSWORD).await;
    let (status, list) = app.send(Method::GET, "/v1/tenants", Some(&globex), None).await;
    assert_eq!((status, list["items"].as_array().map(Vec::len)), (200, Some(0)), "{list}");
    let (status, _) = app.send(Method::GET, &format!("/v1/tenants/{brought_id}"), Some(&globex), None).await;
    assert_eq!(status, 404);
    app.shutdown().await;
}
