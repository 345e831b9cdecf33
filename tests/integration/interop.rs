//! Our tokens verify in a JWT library we did not write: PyJWT, against our JWKS.

use dotmac_tests::TestApp;
use serde_json::Value;
use std::path::Path;

#[tokio::test]
async fn pyjwt_verifies_our_access_tokens_against_our_jwks() {
    let app = TestApp::spawn().await;
    let token = app.admin_token().await;
    let (status, jwks) = app.get_json(&token, "/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(
        jwks["keys"].as_array().map(Vec::len),
        Some(2),
        "the signing key and the next one are both live"
    );

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    assert!(python.exists(), "the project venv is missing: run through `make test`");
    let keys = &app.stack.platform.keys;
    let output = tokio::process::Command::new(python)
        .arg(root.join("tests/interop/verify_with_pyjwt.py"))
        .args([app.address.as_str(), token.as_str(), keys.issuer(), keys.audience()])
        .output()
        .await
        .expect("python runs");
    assert!(output.status.success(), "PyJWT refused the token: {}", String::from_utf8_lossy(&output.stderr));
    let claims: Value = serde_json::from_slice(&output.stdout).expect("claims");
    assert_eq!(claims["roles"], serde_json::json!(["platform_admin"]));

    // And it refuses a token whose signature is not its own, so the check above means
    // something: the access token's header and claims with the refresh token's signature.
    let login: Value =
        app.login(dotmac_tests::ADMIN_EMAIL, dotmac_tests::ADMIN_PASSWORD).await.json().await.expect("json");
    let access = login["access_token"].as_str().expect("access");
    let refresh = login["refresh_token"].as_str().expect("refresh");
    let (signed_part, _) = access.rsplit_once('.').expect("jws");
    let (_, other_signature) = refresh.rsplit_once('.').expect("jws");
    let forged = format!("{signed_part}.{other_signature}");
    let refused = tokio::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/interop/verify_with_pyjwt.py"))
        .args([app.address.as_str(), forged.as_str(), keys.issuer(), keys.audience()])
        .output()
        .await
        .expect("python runs");
    assert!(!refused.status.success(), "PyJWT accepted a forged token");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("InvalidSignatureError"));
    app.shutdown().await;
}
