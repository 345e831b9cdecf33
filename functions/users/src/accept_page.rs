//! `GET /invitations/accept`: the page an invitation's link opens. It is not part of the API
//! (no OpenAPI entry): a small form that takes the token from the link's fragment and posts it,
//! with the chosen password, to `POST /v1/invitations/accept`.

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

pub const ACCEPT_PAGE_PATH: &str = "/invitations/accept";

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem}\
label{display:block;margin:1rem 0 .25rem}input{width:100%;padding:.5rem;box-sizing:border-box}\
button{margin-top:1.5rem;padding:.6rem 1.2rem}#status{min-height:1.5rem}.error{color:#b00020}";

const SCRIPT: &str = r#"
const form = document.getElementById("accept");
const status = document.getElementById("status");
const token = new URLSearchParams(location.hash.slice(1)).get("token");
// The token leaves the address bar (and the history) as soon as the page has it.
history.replaceState(null, "", location.pathname);
const say = (text, error) => { status.textContent = text; status.className = error ? "error" : ""; };
if (!token) {
  say("This page needs the link from your invitation e-mail.", true);
  form.hidden = true;
}
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const password = form.elements.password.value;
  if (password !== form.elements.confirm.value) {
    say("The two passwords differ.", true);
    return;
  }
  form.elements.submit.disabled = true;
  try {
    const answer = await fetch("/v1/invitations/accept", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token, password }),
    });
    const body = await answer.json();
    if (answer.ok) {
      form.hidden = true;
      say("Your account is ready: sign in as " + body.email + ".", false);
    } else {
      say(body.error ? body.error.message : "The invitation could not be accepted.", true);
      form.elements.submit.disabled = false;
    }
  } catch (error) {
    say("The platform could not be reached; try again.", true);
    form.elements.submit.disabled = false;
  }
});
"#;

/// The page and its Content-Security-Policy: only this page's own script and style run
/// (allowed by their hashes), it talks only to its own origin, and no other site may frame it.
static PAGE: LazyLock<(String, HeaderValue)> = LazyLock::new(|| {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Accept your invitation · DotMac Platform</title><style>{STYLE}</style></head>\
         <body><main><h1>Accept your invitation</h1>\
         <p>Choose the password you will sign in with: 12 to 128 characters, not your e-mail \
         address, not a common password.</p>\
         <form id=\"accept\"><label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" \
         minlength=\"12\" maxlength=\"128\" required>\
         <label for=\"confirm\">The same again</label>\
         <input id=\"confirm\" name=\"confirm\" type=\"password\" autocomplete=\"new-password\" \
         minlength=\"12\" maxlength=\"128\" required>\
         <button name=\"submit\" type=\"submit\">Accept the invitation</button></form>\
         <p id=\"status\" role=\"status\"></p></main><script>{SCRIPT}</script></body></html>"
    );
    let policy = format!(
        "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; \
         form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
        source_hash(SCRIPT),
        source_hash(STYLE),
    );
    // The policy is built from fixed text and base64: always a valid header value.
    let policy =
        HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
    (html, policy)
});

/// A CSP source allowing exactly this inline script or style.
fn source_hash(source: &str) -> String {
    format!("sha256-{}", STANDARD.encode(Sha256::digest(source.as_bytes())))
}

pub(crate) async fn accept_page() -> Response {
    let (html, policy) = &*PAGE;
    let mut response = Html(html.clone()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, policy.clone());
    // The link's token is in the fragment, which no Referer carries; this keeps the page's
    // own address out of them too.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_page_allows_its_own_script_and_style_and_nothing_else() {
        let response = accept_page().await;
        let policy = response.headers()[header::CONTENT_SECURITY_POLICY].to_str().expect("ascii").to_owned();
        assert!(policy.starts_with("default-src 'none';"), "{policy}");
        assert!(policy.contains(&format!("script-src '{}'", source_hash(SCRIPT))), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("body");
        let html = String::from_utf8(body.to_vec()).expect("utf-8");
        // The hash covers exactly what sits between the tags, or the browser refuses to run it.
        assert!(html.contains(&format!("<script>{SCRIPT}</script>")));
        assert!(html.contains(&format!("<style>{STYLE}</style>")));
        assert!(html.contains("/v1/invitations/accept"));
    }

    #[test]
    fn a_source_hash_is_sha256_in_standard_base64() {
        // SHA-256("abc"), base64 (not base64url): what CSP expects.
        assert_eq!(source_hash("abc"), "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");
    }
}
