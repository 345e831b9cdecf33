//! Stripe for the platform: the client (`client`), webhook signatures (`signature`) and the
//! webhook events we act on (`event`). The client is async-stripe 1.0 with rustls on
//! aws-lc-rs (the one TLS stack of the workspace); signatures use the `hmac` and `sha2`
//! crates, so no cryptography is written here.

pub mod client;
pub mod event;
pub mod signature;

pub use client::{
    Charge, ChargeOutcome, RefundMade, RefundRequest, RefundSeen, Stripe, StripeCallError, StripeSettings,
};
pub use event::{ChargeRefunded, IntentEvent, IntentEventKind, WebhookEvent};
pub use signature::{DEFAULT_TOLERANCE_SECONDS, SignatureError, sign, verify};
