//! An invoice as a page a person can print (`GET /v1/invoices/{id}/html`), built from the same
//! `InvoiceView` the JSON answer is: every value it shows goes through `escape`, so nothing in
//! an invoice (a bundle's name, a description) can become markup. The page runs no script;
//! its one inline style is allowed by its hash in the Content-Security-Policy.

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::sync::LazyLock;

use crate::views::{InvoiceView, LineView};

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;color:#111}\
h1{font-size:1.5rem;margin:0 0 .25rem}dl{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem}\
dt{color:#555}dd{margin:0}table{width:100%;border-collapse:collapse;margin:1.25rem 0}\
th,td{padding:.35rem .5rem;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}\
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}tfoot td{font-weight:600;border-bottom:0}\
.note{color:#555;font-size:.85rem}@media print{body{margin:0;max-width:none}}";

/// The page's Content-Security-Policy: nothing loads or runs but its own style.
static POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    let policy = format!(
        "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    // Fixed text and base64: always a valid header value.
    HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
});

/// `text` as HTML text (also safe inside a double- or single-quoted attribute).
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// The days `[from_day, to_day)` of the period as a person counts them (from 1).
fn days(line: &LineView) -> String {
    if line.to_day <= line.from_day + 1 {
        format!("{}", line.from_day + 1)
    } else {
        format!("{}–{}", line.from_day + 1, line.to_day)
    }
}

/// The invoice as an HTML document.
pub fn render(invoice: &InvoiceView) -> String {
    let e = escape;
    let title = match invoice.number {
        Some(number) => format!("Invoice {number}"),
        None => format!("Invoice ({})", invoice.status),
    };
    let mut html = String::with_capacity(4_096);
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · {period} · DotMac Platform</title><style>{STYLE}</style></head><body><main>\
         <h1>{title}</h1><dl>",
        title = e(&title),
        period = e(&invoice.period),
    );
    let mut fact = |name: &str, value: &str| {
        let _ = write!(html, "<dt>{}</dt><dd>{}</dd>", e(name), e(value));
    };
    if let Some(id) = &invoice.id {
        fact("Invoice id", id);
    }
    fact("Tenant", &invoice.tenant_id);
    fact("Period", &format!("{} ({} to {}, UTC)", invoice.period, invoice.period_start, invoice.period_end));
    fact("Status", &invoice.status);
    fact("Billable customers", &invoice.billable_customers.to_string());
    if let Some(at) = &invoice.finalized_at {
        fact("Finalized", at);
    }
    fact("Updated", &invoice.updated_at);
    html.push_str(
        "</dl><table><thead><tr><th>Description</th><th class=\"n\">Days</th><th class=\"n\">Quantity</th>\
         <th class=\"n\">Unit price</th><th class=\"n\">Amount</th></tr></thead><tbody>",
    );
    for line in &invoice.lines {
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{} {}</td></tr>",
            e(&line.description),
            e(&days(line)),
            line.quantity,
            e(&line.unit_price),
            e(&line.amount.amount),
            e(&line.amount.currency),
        );
    }
    let _ = write!(
        html,
        "</tbody><tfoot><tr><td colspan=\"4\">Total</td><td class=\"n\">{} {}</td></tr></tfoot></table>",
        e(&invoice.total.amount),
        e(&invoice.total.currency),
    );
    let versions: Vec<String> =
        invoice.price_versions.iter().map(|v| format!("{} v{}", v.plan_id, v.version)).collect();
    let _ = write!(
        html,
        "<p class=\"note\">Prices: {}. Rounding: {}.</p></main></body></html>",
        e(&versions.join(", ")),
        e(&invoice.rounding),
    );
    html
}

/// The page as an answer: HTML, its policy, never cached (an invoice is private).
pub fn page(invoice: &InvoiceView) -> Response {
    let mut response = Html(render(invoice)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, POLICY.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::{InvoicePriceVersion, MoneyView};

    fn money(amount: &str) -> MoneyView {
        MoneyView { minor: 0, currency: "USD".into(), amount: amount.into() }
    }

    fn invoice(description: &str) -> InvoiceView {
        InvoiceView {
            id: Some("t_2027-03".into()),
            number: Some(7),
            tenant_id: "t".into(),
            period: "2027-03".into(),
            period_start: "2027-03-01T00:00:00Z".into(),
            period_end: "2027-04-01T00:00:00Z".into(),
            status: "finalized".into(),
            billable_customers: 1_200,
            lines: vec![LineView {
                kind: "bundle".into(),
                description: description.into(),
                quantity: 1,
                unit_price: "49.00".into(),
                from_day: 9,
                to_day: 31,
                amount: money("34.77"),
                plan_id: None,
                price_version: None,
                bundle: Some("crm".into()),
                source_period: None,
            }],
            total: money("564.77"),
            price_versions: vec![InvoicePriceVersion { plan_id: "usage".into(), version: 2 }],
            rounding: "half away from zero".into(),
            updated_at: "2027-04-01T01:00:00Z".into(),
            finalized_at: Some("2027-04-04T01:00:00Z".into()),
            payment_status: Some("open".into()),
            paid_at: None,
        }
    }

    #[test]
    fn every_value_is_text_never_markup() {
        assert_eq!(escape("a<b>&'\"c"), "a&lt;b&gt;&amp;&#39;&quot;c");
        let html = render(&invoice("CRM <script>alert(1)</script> & \"more\""));
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("CRM &lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;more&quot;"), "{html}");
    }

    #[test]
    fn the_page_shows_the_invoice_its_lines_and_total() {
        let html = render(&invoice("CRM"));
        for shown in [
            "<title>Invoice 7 · 2027-03",
            "<td>CRM</td><td class=\"n\">10–31</td><td class=\"n\">1</td><td class=\"n\">49.00</td><td class=\"n\">34.77 USD</td>",
            "<td colspan=\"4\">Total</td><td class=\"n\">564.77 USD</td>",
            "<dt>Billable customers</dt><dd>1200</dd>",
            "Prices: usage v2.",
        ] {
            assert!(html.contains(shown), "{shown} missing from {html}");
        }
        let draft = InvoiceView { number: None, status: "draft".into(), ..invoice("CRM") };
        assert!(render(&draft).contains("<h1>Invoice (draft)</h1>"));
    }

    #[test]
    fn the_page_allows_its_own_style_and_nothing_else() {
        let response = page(&invoice("CRM"));
        let policy = response.headers()[header::CONTENT_SECURITY_POLICY].to_str().expect("ascii");
        assert!(policy.starts_with("default-src 'none'; style-src 'sha256-"), "{policy}");
        assert!(!policy.contains("script-src"), "{policy}");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "private, no-store");
        let content_type = response.headers()[header::CONTENT_TYPE].to_str().expect("ascii");
        assert!(content_type.starts_with("text/html"), "{content_type}");
    }
}
