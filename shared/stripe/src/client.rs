//! The Stripe calls the platform makes, over async-stripe 1.0. Every call that creates
//! something carries an idempotency key the caller derives from its own ids, so a retried job
//! or a second run gets Stripe's stored answer instead of a second customer or charge.

use std::collections::HashMap;
use std::time::Duration;

use stripe::{
    ApiErrorsType, Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest,
};
use stripe_core::customer::{CreateCustomer, RetrieveCustomer, RetrieveCustomerReturned};
use stripe_core::payment_intent::{CreatePaymentIntent, CreatePaymentIntentOffSession};
use stripe_core::refund::{CreateRefund, ListRefund};
use stripe_shared::{PaymentIntent, PaymentIntentStatus};

/// Where and as whom the client talks to Stripe.
#[derive(Clone)]
pub struct StripeSettings {
    pub secret_key: String,
    /// `https://api.stripe.com` in production; the local double's address in tests.
    pub api_base: String,
}

impl std::fmt::Debug for StripeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeSettings")
            .field("secret_key", &"<redacted>")
            .field("api_base", &self.api_base)
            .finish()
    }
}

/// A failure to get an answer Stripe stands by: the caller retries (same keys, same answer).
#[derive(Debug, thiserror::Error)]
pub enum StripeCallError {
    #[error("Stripe is unreachable or failed: {0}")]
    Unavailable(String),
    /// Stripe refused the request itself (bad parameters, a key reused with other ones):
    /// retrying the same request gets the same refusal.
    #[error("Stripe refused the request ({kind}): {message}")]
    Refused { kind: String, message: String },
    #[error("the Stripe client is misconfigured: {0}")]
    Config(String),
}

/// What confirming a payment intent came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// The money moved.
    Succeeded { payment_intent: String },
    /// The card was declined (or needs the customer): the attempt failed; Stripe keeps the
    /// intent in `requires_payment_method`.
    Declined { payment_intent: Option<String>, code: String, message: String },
    /// Accepted but not final (`processing`, `requires_action`): a webhook will say.
    Pending { payment_intent: String, status: String },
}

/// The parameters of one refund.
#[derive(Debug, Clone)]
pub struct RefundRequest<'a> {
    pub payment_intent: &'a str,
    /// Minor units; at most what is left unrefunded of the charge.
    pub amount: i64,
    pub metadata: HashMap<String, String>,
    pub idempotency_key: &'a str,
}

/// A refund Stripe accepted (`succeeded`, or `pending` on slower payment methods).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundMade {
    pub id: String,
    pub amount: i64,
    pub status: String,
}

/// A refund as Stripe lists it: ours (made by `Stripe::refund`, our metadata on it) or one
/// made outside the platform, in Stripe's dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundSeen {
    pub id: String,
    pub amount: i64,
    pub status: String,
    /// Unix seconds.
    pub created: i64,
    pub reason: Option<String>,
    pub metadata: HashMap<String, String>,
}

/// The parameters of one charge.
#[derive(Debug, Clone)]
pub struct Charge<'a> {
    pub customer: &'a str,
    pub payment_method: &'a str,
    /// Minor units.
    pub amount: i64,
    /// ISO 4217, any case (Stripe takes lowercase).
    pub currency: &'a str,
    pub description: String,
    pub metadata: HashMap<String, String>,
    pub idempotency_key: &'a str,
}

#[derive(Clone)]
pub struct Stripe {
    client: Client,
}

impl std::fmt::Debug for Stripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stripe")
    }
}

fn key(raw: &str) -> Result<RequestStrategy, StripeCallError> {
    IdempotencyKey::new(raw)
        .map(RequestStrategy::Idempotent)
        .map_err(|e| StripeCallError::Config(format!("idempotency key {raw:?}: {e}")))
}

fn call_error(error: StripeError) -> StripeCallError {
    match error {
        // 5xx and 429 are Stripe's own trouble: the same request may succeed later.
        StripeError::Stripe(errors, status) if status < 500 && status != 429 => StripeCallError::Refused {
            kind: errors.type_.as_str().to_owned(),
            message: errors.message.clone().unwrap_or_else(|| format!("HTTP {status}")),
        },
        StripeError::ConfigError(message) => StripeCallError::Config(message),
        other => StripeCallError::Unavailable(other.to_string()),
    }
}

fn outcome_of(intent: &PaymentIntent) -> ChargeOutcome {
    let payment_intent = intent.id.as_str().to_owned();
    match &intent.status {
        PaymentIntentStatus::Succeeded => ChargeOutcome::Succeeded { payment_intent },
        PaymentIntentStatus::RequiresPaymentMethod | PaymentIntentStatus::Canceled => {
            let error = intent.last_payment_error.as_deref();
            ChargeOutcome::Declined {
                payment_intent: Some(payment_intent),
                code: error
                    .and_then(|e| e.code.as_ref().map(|c| c.as_str().to_owned()))
                    .unwrap_or_else(|| intent.status.as_str().to_owned()),
                message: error.and_then(|e| e.message.clone()).unwrap_or_else(|| "the payment failed".into()),
            }
        }
        other => ChargeOutcome::Pending { payment_intent, status: other.as_str().to_owned() },
    }
}

impl Stripe {
    pub fn new(settings: &StripeSettings) -> Result<Self, StripeCallError> {
        let client = ClientBuilder::new(settings.secret_key.clone())
            .url(settings.api_base.clone())
            // Per attempt; a Lambda's own timeout bounds the whole job.
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| StripeCallError::Config(e.to_string()))?;
        Ok(Stripe { client })
    }

    /// Creates the customer of a tenant. `idempotency_key` comes from the tenant id, so two
    /// first needs at once (or a retry after a lost answer) get one customer.
    pub async fn create_customer(
        &self,
        tenant_id: &str,
        name: &str,
        idempotency_key: &str,
    ) -> Result<String, StripeCallError> {
        let metadata = HashMap::from([("tenant_id".to_owned(), tenant_id.to_owned())]);
        let customer = CreateCustomer::new()
            .name(name)
            .description(format!("DotMac tenant {tenant_id}"))
            .metadata(metadata)
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(call_error)?;
        Ok(customer.id.as_str().to_owned())
    }

    /// The customer's default payment method (`invoice_settings.default_payment_method`), if
    /// it has one and still exists.
    pub async fn default_payment_method(&self, customer: &str) -> Result<Option<String>, StripeCallError> {
        let answer = RetrieveCustomer::new(customer).send(&self.client).await.map_err(call_error)?;
        Ok(match answer {
            RetrieveCustomerReturned::Customer(customer) => customer
                .invoice_settings
                .and_then(|settings| settings.default_payment_method)
                .map(|method| method.id().as_str().to_owned()),
            RetrieveCustomerReturned::DeletedCustomer(_) => None,
        })
    }

    /// Creates and confirms an off-session payment intent. A decline is an outcome, not an
    /// error: Stripe answers it with a 402 whose body carries the intent.
    pub async fn charge(&self, charge: Charge<'_>) -> Result<ChargeOutcome, StripeCallError> {
        let currency =
            charge.currency.to_ascii_lowercase().parse::<stripe_types::Currency>().map_err(|_| {
                StripeCallError::Config(format!("{} is no currency Stripe knows", charge.currency))
            })?;
        let request = CreatePaymentIntent::new(charge.amount, currency)
            .customer(charge.customer)
            .payment_method(charge.payment_method)
            .confirm(true)
            .off_session(CreatePaymentIntentOffSession::Bool(true))
            .description(charge.description)
            .metadata(charge.metadata)
            .customize()
            .request_strategy(key(charge.idempotency_key)?);
        match request.send(&self.client).await {
            Ok(intent) => Ok(outcome_of(&intent)),
            Err(StripeError::Stripe(errors, 402)) | Err(StripeError::Stripe(errors, 400))
                if errors.type_ == ApiErrorsType::CardError =>
            {
                Ok(ChargeOutcome::Declined {
                    payment_intent: errors.payment_intent.as_ref().map(|pi| pi.id.as_str().to_owned()),
                    code: errors
                        .decline_code
                        .clone()
                        .or_else(|| errors.code.as_ref().map(|c| c.as_str().to_owned()))
                        .unwrap_or_else(|| "card_error".into()),
                    message: errors.message.clone().unwrap_or_else(|| "the card was declined".into()),
                })
            }
            Err(error) => Err(call_error(error)),
        }
    }

    /// Refunds (part of) a succeeded payment intent, under an idempotency key the caller
    /// derives from the invoice and the refund's sequence: a retry after a lost answer gets
    /// the same refund, never a second one. A refund Stripe reports `failed` or `canceled`
    /// is a refusal.
    pub async fn refund(&self, refund: RefundRequest<'_>) -> Result<RefundMade, StripeCallError> {
        let made = CreateRefund::new()
            .payment_intent(refund.payment_intent)
            .amount(refund.amount)
            .metadata(refund.metadata)
            .customize()
            .request_strategy(key(refund.idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(call_error)?;
        let status = made.status.clone().unwrap_or_else(|| "succeeded".into());
        if !matches!(status.as_str(), "succeeded" | "pending") {
            return Err(StripeCallError::Refused {
                kind: "refund_failed".into(),
                message: made.failure_reason.clone().unwrap_or_else(|| format!("the refund is {status}")),
            });
        }
        Ok(RefundMade { id: made.id.as_str().to_owned(), amount: made.amount, status })
    }

    /// Every refund of a payment intent, oldest first (Stripe lists newest first, a page of at
    /// most 100 at a time).
    pub async fn refunds_of(&self, payment_intent: &str) -> Result<Vec<RefundSeen>, StripeCallError> {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut request = ListRefund::new().payment_intent(payment_intent).limit(100);
            if let Some(after) = &after {
                request = request.starting_after(after.clone());
            }
            let page = request.send(&self.client).await.map_err(call_error)?;
            after = page.data.last().map(|r| r.id.as_str().to_owned());
            seen.extend(page.data.into_iter().map(|r| RefundSeen {
                id: r.id.as_str().to_owned(),
                amount: r.amount,
                status: r.status.unwrap_or_else(|| "succeeded".into()),
                created: r.created,
                reason: r.reason.map(|reason| reason.as_str().to_owned()),
                metadata: r.metadata.unwrap_or_default(),
            }));
            if !page.has_more || after.is_none() {
                break;
            }
        }
        seen.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(seen)
    }
}
