//! The invitation e-mail, sent through SES (v2 `SendEmail`) from the configured sender.

use aws_sdk_sesv2::error::DisplayErrorContext;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};
use dotmac_store::InvitationRecord;
use dotmac_tokens::InvitationToken;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

/// Sends invitation e-mails. Cheap to clone: the SES client is shared.
#[derive(Clone)]
pub struct InvitationMail {
    client: aws_sdk_sesv2::Client,
    sender: String,
    accept_url: String,
    print_links: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("the invitation e-mail was not sent: {0}")]
pub struct MailError(String);

impl InvitationMail {
    /// `accept_url` is the page the link opens; `print_links` also prints each link on stdout
    /// (the dev server, so a person can follow it: never in AWS, the link is a credential).
    pub fn new(
        client: aws_sdk_sesv2::Client,
        sender: impl Into<String>,
        accept_url: impl Into<String>,
        print_links: bool,
    ) -> Self {
        Self { client, sender: sender.into(), accept_url: accept_url.into(), print_links }
    }

    /// The invitee's link. The token rides in the fragment, which browsers never send to a
    /// server: it stays out of access logs, proxies and `Referer` headers; the page reads it.
    pub fn link(&self, token: &InvitationToken) -> String {
        format!("{}#token={}", self.accept_url, token.expose())
    }

    pub async fn send(
        &self,
        invitation: &InvitationRecord,
        token: &InvitationToken,
    ) -> Result<(), MailError> {
        let link = self.link(token);
        if self.print_links {
            println!("  invitation for {}: {link}", invitation.email.as_str());
        }
        let expires = OffsetDateTime::from_unix_timestamp(invitation.expires_at)
            .ok()
            .and_then(|at| at.format(&Rfc2822).ok())
            .unwrap_or_else(|| "in a few days".to_owned());
        let text = format!(
            "You have been invited to DotMac Platform as {email}.\n\n\
             Set your password to accept the invitation:\n{link}\n\n\
             The link works once, until {expires}. If you did not expect this invitation, \
             ignore this e-mail: nothing happens until the link is used.\n",
            email = invitation.email.as_str(),
        );
        let html = format!(
            "<p>You have been invited to DotMac Platform as <b>{email}</b>.</p>\
             <p><a href=\"{link}\">Set your password to accept the invitation</a></p>\
             <p>The link works once, until {expires}. If you did not expect this invitation, \
             ignore this e-mail: nothing happens until the link is used.</p>",
            email = escape_html(invitation.email.as_str()),
        );
        let content = |data: String| {
            Content::builder().data(data).charset("UTF-8").build().map_err(|e| MailError(e.to_string()))
        };
        let message = Message::builder()
            .subject(content("Your invitation to DotMac Platform".to_owned())?)
            .body(Body::builder().text(content(text)?).html(content(html)?).build())
            .build();
        self.client
            .send_email()
            .from_email_address(&self.sender)
            .destination(Destination::builder().to_addresses(invitation.email.as_str()).build())
            .content(EmailContent::builder().simple(message).build())
            .send()
            .await
            .map_err(|e| MailError(DisplayErrorContext(e).to_string()))?;
        Ok(())
    }
}

/// An address may hold `&`, `<`, `'`, ... (visible ASCII): written into HTML, it must stay text.
fn escape_html(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_written_into_the_html_stays_text() {
        assert_eq!(escape_html("a<b>&'\"@x.example"), "a&lt;b&gt;&amp;&#39;&quot;@x.example");
    }
}
