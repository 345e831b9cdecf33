//! The webhook events the platform reads, decoded from the verified raw body. Only the
//! fields we act on are read (serde ignores the rest), so a newer API version adding fields
//! never breaks delivery.

use std::collections::HashMap;

use serde::Deserialize;

/// Any event: its id (the dedupe key), type and object.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WebhookEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix seconds, when Stripe created it.
    pub created: i64,
    pub data: EventData,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

/// What a payment-intent event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentEventKind {
    Succeeded,
    Failed,
}

/// A `payment_intent.succeeded` / `payment_intent.payment_failed` event, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentEvent {
    pub event_id: String,
    pub kind: IntentEventKind,
    pub payment_intent: String,
    pub amount: i64,
    pub currency: String,
    /// What we put on the intent when creating it (`payment_id`, `invoice_id`, `tenant_id`).
    pub metadata: HashMap<String, String>,
    /// The decline's code and message, on a failure.
    pub failure: Option<(String, String)>,
}

/// A `charge.refunded` event, read: money of a charge went back, through the platform or
/// in Stripe's dashboard. The charge carries its payment intent's metadata (Stripe copies
/// it when the intent creates the charge), so ours names its payment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChargeRefunded {
    #[serde(rename = "id")]
    pub charge: String,
    pub payment_intent: Option<String>,
    /// Everything refunded of the charge so far.
    pub amount_refunded: i64,
    pub currency: String,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
}

#[derive(Deserialize)]
struct IntentObject {
    id: String,
    amount: i64,
    currency: String,
    #[serde(default)]
    metadata: HashMap<String, String>,
    #[serde(default)]
    last_payment_error: Option<PaymentError>,
}

#[derive(Deserialize)]
struct PaymentError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl WebhookEvent {
    pub fn parse(body: &[u8]) -> Result<WebhookEvent, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The payment-intent outcome this event reports; `None` for the types we do not act on
    /// (they are acknowledged and ignored, as Stripe asks of an endpoint).
    pub fn intent(&self) -> Result<Option<IntentEvent>, serde_json::Error> {
        let kind = match self.kind.as_str() {
            "payment_intent.succeeded" => IntentEventKind::Succeeded,
            "payment_intent.payment_failed" => IntentEventKind::Failed,
            _ => return Ok(None),
        };
        let object: IntentObject = serde_json::from_value(self.data.object.clone())?;
        let failure = match kind {
            IntentEventKind::Succeeded => None,
            IntentEventKind::Failed => {
                let error = object.last_payment_error;
                let code = error
                    .as_ref()
                    .and_then(|e| e.decline_code.clone().or_else(|| e.code.clone()))
                    .unwrap_or_else(|| "payment_failed".into());
                let message = error.and_then(|e| e.message).unwrap_or_else(|| "the payment failed".into());
                Some((code, message))
            }
        };
        Ok(Some(IntentEvent {
            event_id: self.id.clone(),
            kind,
            payment_intent: object.id,
            amount: object.amount,
            currency: object.currency,
            metadata: object.metadata,
            failure,
        }))
    }
}

impl WebhookEvent {
    /// The charge a `charge.refunded` event is about; `None` for other types.
    pub fn refunded_charge(&self) -> Result<Option<ChargeRefunded>, serde_json::Error> {
        if self.kind != "charge.refunded" {
            return Ok(None);
        }
        serde_json::from_value(self.data.object.clone()).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_intent_event_reads_its_decline() {
        let body = br#"{"id":"evt_1","object":"event","type":"payment_intent.payment_failed","created":1796000000,
            "data":{"object":{"id":"pi_1","object":"payment_intent","amount":2500,"currency":"usd",
            "metadata":{"payment_id":"p1"},"status":"requires_payment_method",
            "last_payment_error":{"type":"card_error","code":"card_declined","decline_code":"generic_decline","message":"Your card was declined."}}}}"#;
        let event = WebhookEvent::parse(body).expect("event");
        let intent = event.intent().expect("intent").expect("a payment intent event");
        assert_eq!(intent.kind, IntentEventKind::Failed);
        assert_eq!(intent.payment_intent, "pi_1");
        assert_eq!(intent.metadata["payment_id"], "p1");
        assert_eq!(intent.failure, Some(("generic_decline".into(), "Your card was declined.".into())));
    }

    #[test]
    fn a_refunded_charge_reads_its_total_and_its_intents_metadata() {
        let body = br#"{"id":"evt_3","object":"event","type":"charge.refunded","created":1796000000,
            "data":{"object":{"id":"ch_1","object":"charge","amount":2500,"amount_refunded":1000,"currency":"usd",
            "payment_intent":"pi_1","metadata":{"payment_id":"p1"},"refunded":false,"refunds":null}}}"#;
        let event = WebhookEvent::parse(body).expect("event");
        let charge = event.refunded_charge().expect("read").expect("a refunded charge");
        assert_eq!((charge.charge.as_str(), charge.amount_refunded), ("ch_1", 1000));
        assert_eq!(charge.payment_intent.as_deref(), Some("pi_1"));
        assert_eq!(charge.metadata["payment_id"], "p1");
        assert_eq!(event.intent().expect("read"), None);
    }

    #[test]
    fn other_event_types_are_not_ours() {
        let body = br#"{"id":"evt_2","object":"event","type":"customer.created","created":1,"data":{"object":{"id":"cus_1"}}}"#;
        let event = WebhookEvent::parse(body).expect("event");
        assert_eq!(event.intent().expect("read"), None);
        assert_eq!(event.refunded_charge().expect("read"), None);
    }
}
