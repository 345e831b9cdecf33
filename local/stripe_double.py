"""The platform's own local Stripe test double: the few Stripe endpoints the platform calls,
stateful, in the Python standard library only.

What it honours, as Stripe does:
- State per secret key (a Stripe account per key): customers, payment intents, webhook
  endpoints and idempotency keys of one key are invisible to another, so parallel tests that
  each use a key of their own never see each other.
- Idempotency keys (`Idempotency-Key` header on POST): the same key with the same method, path
  and parameters answers the stored response again (status and body, with
  `Idempotent-Replayed: true`); the same key with other parameters answers 400
  `idempotency_error`. Requests are handled one at a time, so two concurrent uses of one key
  cannot both execute.
- Declines on demand: confirming with `pm_card_chargeDeclined` (or any payment method id
  containing `chargeDeclined`), directly or as the customer's
  `invoice_settings.default_payment_method`, declines with Stripe's 402 `card_error`
  (`card_declined`), the payment intent left in `requires_payment_method`.
- Payments settled later: a payment method containing `processing` leaves the confirmed
  intent `processing`, with no outcome event (the platform's webhook handler decides it). A
  secret key containing `processing` makes that the new customers' default method.
- Refunds (`POST /v1/refunds` with `payment_intent`, optional `amount`; `GET /v1/refunds`
  by `payment_intent`, newest first, paged): never more than the
  charge has left unrefunded (400 `invalid_request_error`, as Stripe answers), idempotent
  like every POST; each one emits `refund.created` and `charge.refunded`.
- Signed webhooks after each state change (`customer.created`, `payment_intent.succeeded`,
  `payment_intent.payment_failed`, `refund.created`, `charge.refunded`):
  `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "{t}.{body}" with the webhook secret>`, POSTed to every endpoint of the key (registered with
  `POST /v1/webhook_endpoints`, as on Stripe) and to `--webhook-url` for every key, retried a
  few times on failure.
- Responses are shaped from Stripe's own example objects (fixtures3.json in the handbook, kept
  here as the subset the endpoints answer), so async-stripe deserializes them.

Where it differs from Stripe (a double, for tests and `make dev`):
- A new customer gets `pm_card_visa` as its default payment method unless `payment_method` is
  given: the platform has no card-collection flow yet, and `make dev` should be able to pay.
- Every endpoint of every key is signed with the one webhook secret it was started with.

Read-back for tests (not Stripe's API), authenticated with the key like any call:
- `GET /_double/summary`: counts of customers, payment intents, succeeded and declined
  confirmations, the API requests the key made (`requests`, and `requests_by_endpoint` as
  `"METHOD /v1/resource/{id}"`; read-back calls not counted), and the webhook deliveries with
  the status our endpoint answered.
- `POST /_double/events/<id>/resend`: deliver an event once more (as the Dashboard's resend).

Usage: stripe_double.py --port PORT --webhook-secret whsec_... [--webhook-url URL]
"""

import argparse
import base64
import copy
import hashlib
import hmac
import json
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

# Stripe's example objects (fixtures3.json, stripe/openapi f6c2a48f), trimmed of fields that
# only hold example sub-objects of other resources.
CUSTOMER = {
    "address": None,
    "balance": 0,
    "created": 1234567890,
    "currency": None,
    "default_source": None,
    "delinquent": False,
    "description": None,
    "discount": None,
    "email": None,
    "id": "cus_QXg1o8vcGmoR32",
    "invoice_prefix": "7FE1103",
    "invoice_settings": {
        "custom_fields": None,
        "default_payment_method": None,
        "footer": None,
        "rendering_options": None,
    },
    "livemode": False,
    "metadata": {},
    "name": None,
    "next_invoice_sequence": 1,
    "object": "customer",
    "phone": None,
    "preferred_locales": [],
    "shipping": None,
    "tax_exempt": "none",
    "test_clock": None,
    "customer_account": None,
}

PAYMENT_INTENT = {
    "amount": 1099,
    "amount_capturable": 0,
    "amount_details": {"tip": {}},
    "amount_received": 0,
    "application": None,
    "application_fee_amount": None,
    "automatic_payment_methods": None,
    "canceled_at": None,
    "cancellation_reason": None,
    "capture_method": "automatic",
    "client_secret": "pi_1PgafyB7WZ01zgkWSjxsAJo3_secret_Dm43xiq1k0ywrRRjDoi8y1gkM",
    "confirmation_method": "automatic",
    "created": 1234567890,
    "currency": "usd",
    "customer": None,
    "description": None,
    "id": "pi_1PgafyB7WZ01zgkWSjxsAJo3",
    "last_payment_error": None,
    "latest_charge": None,
    "livemode": False,
    "metadata": {},
    "next_action": None,
    "object": "payment_intent",
    "on_behalf_of": None,
    "payment_method": None,
    "payment_method_configuration_details": None,
    "payment_method_options": {},
    "payment_method_types": ["card"],
    "processing": None,
    "receipt_email": None,
    "review": None,
    "setup_future_usage": None,
    "shipping": None,
    "statement_descriptor": None,
    "statement_descriptor_suffix": None,
    "status": "requires_payment_method",
    "transfer_data": None,
    "transfer_group": None,
    "source": None,
    "excluded_payment_method_types": None,
    "customer_account": None,
}

REFUND = {
    "amount": 100,
    "balance_transaction": None,
    "charge": "ch_1PgafuB7WZ01zgkWXYmPNZs8",
    "created": 1234567890,
    "currency": "usd",
    "destination_details": {"card": {"type": "reversal"}, "type": "card"},
    "id": "re_1Pgc72B7WZ01zgkWqPvrRrPE",
    "metadata": {},
    "object": "refund",
    "payment_intent": None,
    "reason": None,
    "receipt_number": None,
    "source_transfer_reversal": None,
    "status": "succeeded",
    "transfer_reversal": None,
    "customer": None,
    "customer_account": None,
    "payment_method": None,
}
WEBHOOK_ENDPOINT = {
    "api_version": None,
    "application": None,
    "created": 1234567890,
    "description": None,
    "enabled_events": ["*"],
    "id": "we_1Mr5jULkdIwHu7ix1ibLTM0x",
    "livemode": False,
    "metadata": {},
    "object": "webhook_endpoint",
    "status": "enabled",
    "url": "https://example.com/my/webhook/endpoint",
}

API_VERSION = "2025-09-30.clover"
DECLINE_MARKER = "chargeDeclined"
# A payment method Stripe settles later (a bank debit): the intent stays `processing` and
# no outcome event is sent; the platform's webhook handler is what decides such a payment.
PROCESSING_MARKER = "processing"
PROCESSING_METHOD = "pm_usBankAccount_processing"
DELIVERY_ATTEMPTS = 4


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def nested(pairs: list[tuple[str, str]]) -> dict:
    """Stripe's form encoding (`metadata[invoice_id]=…`, `expand[0]=…`) as nested values."""
    out: dict = {}
    for key, value in pairs:
        parts = key.replace("]", "").split("[")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"parameter {key} conflicts with another")
        node[parts[-1]] = value
    return out


def stripe_error(status: int, kind: str, message: str, **extra) -> tuple[int, dict]:
    return status, {"error": {"type": kind, "message": message, **extra}}


def metadata_of(params: dict) -> dict:
    """`metadata[key]=value` pairs; an empty `metadata=` (how clients send an empty map, and
    Stripe's way to clear it) is none."""
    value = params.get("metadata")
    return dict(value) if isinstance(value, dict) else {}


def truthy(value) -> bool:
    return str(value).lower() == "true"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class Account:
    """Everything one secret key owns."""

    def __init__(self, default_method: str) -> None:
        # What a new customer pays with unless its creation names a payment method.
        self.default_method = default_method
        self.customers: dict[str, dict] = {}
        self.payment_intents: dict[str, dict] = {}
        self.refunds: dict[str, dict] = {}
        self.refunded: dict[str, int] = {}
        self.endpoints: dict[str, dict] = {}
        self.idempotency: dict[str, tuple[str, int, dict]] = {}
        self.events: dict[str, dict] = {}
        self.deliveries: list[dict] = []
        self.succeeded = 0
        self.declined = 0
        self.processing = 0
        # Every API request of the key, idempotent replays and refusals included (what a
        # client's call count is measured by); the read-back below is not counted.
        self.requests = 0
        self.requests_by_endpoint: dict[str, int] = {}

    def count(self, method: str, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        endpoint = "/" + "/".join(parts[:2] + ["{id}" for _ in parts[2:3]] + parts[3:])
        self.requests += 1
        name = f"{method} {endpoint}"
        self.requests_by_endpoint[name] = self.requests_by_endpoint.get(name, 0) + 1


class Double:
    def __init__(self, webhook_secret: str, webhook_url: str | None) -> None:
        self.webhook_secret = webhook_secret
        self.webhook_url = webhook_url
        self.accounts: dict[str, Account] = {}
        self.lock = threading.Lock()

    def account(self, key: str) -> Account:
        account = self.accounts.get(key)
        if account is None:
            # A key naming `processing` is an account whose customers pay by bank debit (see
            # PROCESSING_MARKER): the bench's way to have the webhook decide payments.
            account = self.accounts[key] = Account(PROCESSING_METHOD if PROCESSING_MARKER in key else "pm_card_visa")
        return account

    # --- requests -------------------------------------------------------------------------

    def handle(self, key: str, method: str, path: str, params: dict, idem: str | None):
        """(status, body, replayed, events to deliver) for one authenticated request."""
        account = self.account(key)
        if method == "POST" and idem is not None:
            fingerprint = json.dumps([method, path, params], sort_keys=True)
            stored = account.idempotency.get(idem)
            if stored is not None:
                if stored[0] != fingerprint:
                    status, body = stripe_error(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same parameters they "
                        f"were first used with. Try using a key other than '{idem}' if you meant to "
                        "execute a different request.",
                    )
                    return status, body, False, []
                return stored[1], copy.deepcopy(stored[2]), True, []
        status, body, events = self.route(account, method, path, params)
        # Stripe saves every answer but its own 5xx, declines included.
        if method == "POST" and idem is not None and status < 500:
            account.idempotency[idem] = (fingerprint, status, copy.deepcopy(body))
        return status, body, False, events

    def route(self, account: Account, method: str, path: str, params: dict):
        parts = [p for p in path.split("/") if p]
        if parts[:1] != ["v1"]:
            return (*stripe_error(404, "invalid_request_error", f"Unrecognized request URL ({method}: {path})."), [])
        parts = parts[1:]
        if parts == ["customers"] and method == "POST":
            return self.create_customer(account, params)
        if len(parts) == 2 and parts[0] == "customers":
            customer = account.customers.get(parts[1])
            if customer is None:
                return (*missing("customer", parts[1]), [])
            if method == "GET":
                return 200, customer, []
            if method == "POST":
                return self.update_customer(customer, params)
        if parts == ["payment_intents"] and method == "POST":
            return self.create_payment_intent(account, params)
        if len(parts) == 2 and parts[0] == "payment_intents" and method == "GET":
            intent = account.payment_intents.get(parts[1])
            if intent is None:
                return (*missing("payment_intent", parts[1]), [])
            return 200, intent, []
        if parts == ["refunds"] and method == "POST":
            return self.create_refund(account, params)
        if parts == ["refunds"] and method == "GET":
            return self.list_refunds(account, params)
        if parts == ["webhook_endpoints"] and method == "POST":
            url = params.get("url")
            if not url:
                return (*stripe_error(400, "invalid_request_error", "Missing required param: url.", param="url"), [])
            endpoint = dict(WEBHOOK_ENDPOINT, id=new_id("we"), url=url, created=int(time.time()))
            endpoint["secret"] = self.webhook_secret
            account.endpoints[endpoint["id"]] = endpoint
            return 200, endpoint, []
        return (*stripe_error(404, "invalid_request_error", f"Unrecognized request URL ({method}: {path})."), [])

    def create_customer(self, account: Account, params: dict):
        customer = copy.deepcopy(CUSTOMER)
        customer.update(id=new_id("cus"), created=int(time.time()))
        for field in ("email", "name", "description"):
            if field in params:
                customer[field] = params[field]
        customer["metadata"] = metadata_of(params)
        customer["invoice_settings"]["default_payment_method"] = params.get("payment_method", account.default_method)
        account.customers[customer["id"]] = customer
        return 200, customer, [("customer.created", customer)]

    def update_customer(self, customer: dict, params: dict):
        if "metadata" in params:
            if isinstance(params["metadata"], dict):
                customer["metadata"].update(params["metadata"])
            else:
                customer["metadata"] = {}
        settings = params.get("invoice_settings", {})
        if "default_payment_method" in settings:
            customer["invoice_settings"]["default_payment_method"] = settings["default_payment_method"] or None
        for field in ("email", "name", "description"):
            if field in params:
                customer[field] = params[field]
        return 200, customer, [("customer.updated", customer)]

    def create_payment_intent(self, account: Account, params: dict):
        try:
            amount = int(params.get("amount", ""))
        except ValueError:
            return (*stripe_error(400, "invalid_request_error", "Missing required param: amount.", param="amount"), [])
        if amount < 1:
            return (*stripe_error(400, "invalid_request_error", "This value must be greater than or equal to 1.", param="amount"), [])
        currency = params.get("currency")
        if not currency:
            return (*stripe_error(400, "invalid_request_error", "Missing required param: currency.", param="currency"), [])
        customer_id = params.get("customer")
        customer = account.customers.get(customer_id) if customer_id else None
        if customer_id and customer is None:
            return (*missing("customer", customer_id), [])
        intent = copy.deepcopy(PAYMENT_INTENT)
        created = int(time.time())
        intent_id = new_id("pi")
        intent.update(
            id=intent_id,
            client_secret=f"{intent_id}_secret_{secrets.token_hex(8)}",
            amount=amount,
            currency=currency.lower(),
            created=created,
            customer=customer_id,
            description=params.get("description"),
            metadata=metadata_of(params),
            payment_method=params.get("payment_method"),
        )
        account.payment_intents[intent_id] = intent
        if not truthy(params.get("confirm", "false")):
            return 200, intent, [("payment_intent.created", intent)]
        method = intent["payment_method"] or (customer or {}).get("invoice_settings", {}).get("default_payment_method")
        if not method:
            return (*stripe_error(
                400,
                "invalid_request_error",
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
                code="payment_intent_unexpected_state",
                payment_intent=intent,
            ), [("payment_intent.created", intent)])
        intent["payment_method"] = method
        charge = new_id("ch")
        intent["latest_charge"] = charge
        if DECLINE_MARKER in method:
            account.declined += 1
            intent["status"] = "requires_payment_method"
            error = {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "generic_decline",
                "message": "Your card was declined.",
                "charge": charge,
                "doc_url": "https://stripe.com/docs/error-codes/card-declined",
            }
            intent["last_payment_error"] = dict(error)
            events = [("payment_intent.created", intent), ("payment_intent.payment_failed", intent)]
            return 402, {"error": dict(error, payment_intent=intent)}, events
        if PROCESSING_MARKER in method:
            account.processing += 1
            intent["status"] = "processing"
            return 200, intent, [("payment_intent.created", intent), ("payment_intent.processing", intent)]
        account.succeeded += 1
        intent["status"] = "succeeded"
        intent["amount_received"] = amount
        return 200, intent, [("payment_intent.created", intent), ("payment_intent.succeeded", intent)]

    def create_refund(self, account: Account, params: dict):
        """A refund of (part of) a succeeded payment intent's charge: never more than is left
        unrefunded (Stripe's `charge_already_refunded` once nothing is left)."""
        intent_id = params.get("payment_intent")
        if not intent_id:
            return (*stripe_error(400, "invalid_request_error", "Missing required param: payment_intent.", param="payment_intent"), [])
        intent = account.payment_intents.get(intent_id)
        if intent is None:
            return (*missing("payment_intent", intent_id), [])
        if intent["status"] != "succeeded":
            return (*stripe_error(400, "invalid_request_error", f"PaymentIntent {intent_id} does not have a successful charge to refund.", code="charge_not_refundable"), [])
        # Kept beside the intent: a payment intent has no `amount_refunded` of its own.
        refunded = account.refunded.get(intent_id, 0)
        left = intent["amount_received"] - refunded
        try:
            amount = int(params.get("amount", left))
        except ValueError:
            return (*stripe_error(400, "invalid_request_error", "Invalid integer: amount.", param="amount"), [])
        if left <= 0:
            return (*stripe_error(400, "invalid_request_error", f"Charge {intent['latest_charge']} has already been refunded.", code="charge_already_refunded"), [])
        if amount < 1 or amount > left:
            return (*stripe_error(400, "invalid_request_error", f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})", param="amount"), [])
        refund = copy.deepcopy(REFUND)
        refund.update(
            id=new_id("re"),
            amount=amount,
            charge=intent["latest_charge"],
            created=int(time.time()),
            currency=intent["currency"],
            metadata=metadata_of(params),
            payment_intent=intent_id,
            reason=params.get("reason"),
        )
        account.refunded[intent_id] = refunded + amount
        account.refunds[refund["id"]] = refund
        charge = {
            "id": intent["latest_charge"],
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": intent["amount_received"],
            "amount_refunded": refunded + amount,
            "currency": intent["currency"],
            "customer": intent["customer"],
            "metadata": dict(intent["metadata"]),
            "paid": True,
            "payment_intent": intent_id,
            "refunded": refunded + amount >= intent["amount_received"],
            "status": "succeeded",
        }
        return 200, refund, [("refund.created", refund), ("charge.refunded", charge)]

    def list_refunds(self, account: Account, params: dict):
        """`GET /v1/refunds`, newest first, filtered by `payment_intent`, paged by `limit`
        (1-100, default 10) and `starting_after`, as Stripe's list endpoints are."""
        try:
            limit = int(params.get("limit", 10))
        except ValueError:
            return (*stripe_error(400, "invalid_request_error", "Invalid integer: limit.", param="limit"), [])
        if not 1 <= limit <= 100:
            return (*stripe_error(400, "invalid_request_error", "This value must be between 1 and 100.", param="limit"), [])
        intent = params.get("payment_intent")
        refunds = [r for r in account.refunds.values() if intent is None or r["payment_intent"] == intent]
        # Creation order is insertion order here; newest first as Stripe lists.
        refunds.reverse()
        after = params.get("starting_after")
        if after is not None:
            ids = [r["id"] for r in refunds]
            if after not in ids:
                return (*missing("refund", after), [])
            refunds = refunds[ids.index(after) + 1 :]
        page = refunds[:limit]
        return 200, {"object": "list", "data": page, "has_more": len(refunds) > limit, "url": "/v1/refunds"}, []

    # --- webhooks -------------------------------------------------------------------------

    def event(self, account: Account, kind: str, obj: dict) -> dict:
        event = {
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": {"object": copy.deepcopy(obj)},
            "id": new_id("evt"),
            "livemode": False,
            "object": "event",
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": kind,
        }
        account.events[event["id"]] = event
        return event

    def targets(self, account: Account) -> list[str]:
        urls = [e["url"] for e in account.endpoints.values()]
        if self.webhook_url and self.webhook_url not in urls:
            urls.append(self.webhook_url)
        return urls

    def deliver(self, account: Account, event: dict) -> None:
        """Posts `event` to every endpoint of its account, each in its own thread, retried a
        few times on a failure (Stripe retries for days; a double retries for seconds)."""
        body = json.dumps(event).encode()
        for url in self.targets(account):
            threading.Thread(target=self.post, args=(account, url, event, body), daemon=True).start()

    def post(self, account: Account, url: str, event: dict, body: bytes) -> None:
        status = None
        for attempt in range(DELIVERY_ATTEMPTS):
            request = urllib.request.Request(url, data=body, method="POST")
            request.add_header("content-type", "application/json; charset=utf-8")
            request.add_header("user-agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
            request.add_header("stripe-signature", sign(self.webhook_secret, int(time.time()), body))
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    status = response.status
            except urllib.error.HTTPError as error:
                status = error.code
            except (urllib.error.URLError, OSError):
                status = None
            if status is not None and 200 <= status < 300:
                break
            time.sleep(0.5 * (attempt + 1))
        with self.lock:
            account.deliveries.append({"event": event["id"], "type": event["type"], "url": url, "status": status})

    def summary(self, account: Account) -> dict:
        return {
            "customers": len(account.customers),
            "payment_intents": len(account.payment_intents),
            "refunds": len(account.refunds),
            "refunded": sum(r["amount"] for r in account.refunds.values()),
            "succeeded": account.succeeded,
            "declined": account.declined,
            "processing": account.processing,
            "requests": account.requests,
            "requests_by_endpoint": dict(account.requests_by_endpoint),
            "events": [{"id": e["id"], "type": e["type"]} for e in account.events.values()],
            "deliveries": list(account.deliveries),
        }


def missing(kind: str, ident: str) -> tuple[int, dict]:
    return stripe_error(404, "invalid_request_error", f"No such {kind}: '{ident}'", code="resource_missing", param="id")


def make_handler(double: Double):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # one line per request on stderr, like Stripe's log
            sys.stderr.write("stripe-double: " + (fmt % args) + "\n")

        def answer(self, status: int, body: dict, replayed: bool = False) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.send_header("request-id", new_id("req"))
            self.send_header("stripe-version", API_VERSION)
            if replayed:
                self.send_header("idempotent-replayed", "true")
            self.end_headers()
            self.wfile.write(raw)

        def key(self) -> str | None:
            """The secret key, as Stripe takes it: Bearer, or Basic with the key as the user."""
            auth = self.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                return auth[7:].strip() or None
            if auth.lower().startswith("basic "):
                try:
                    user = base64.b64decode(auth[6:].strip()).decode().split(":", 1)[0]
                except (ValueError, UnicodeDecodeError):
                    return None
                return user or None
            return None

        def serve(self, method: str) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            if url.path == "/health":
                self.answer(200, {"ok": True})
                return
            key = self.key()
            if key is None:
                self.answer(*stripe_error(
                    401,
                    "invalid_request_error",
                    "You did not provide an API key. You need to provide your API key in the "
                    "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
                ))
                return
            try:
                pairs = parse_qsl(url.query, keep_blank_values=True)
                if raw:
                    pairs += parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=True)
                params = nested(pairs)
            except (ValueError, UnicodeDecodeError) as error:
                self.answer(*stripe_error(400, "invalid_request_error", f"Invalid request body: {error}"))
                return
            params.pop("expand", None)
            to_send: list = []
            with double.lock:
                account = double.account(key)
                if url.path == "/_double/summary" and method == "GET":
                    self.answer(200, double.summary(account))
                    return
                if url.path.startswith("/_double/events/") and url.path.endswith("/resend") and method == "POST":
                    event = account.events.get(url.path.split("/")[3])
                    if event is None:
                        self.answer(*missing("event", url.path.split("/")[3]))
                        return
                    to_send = [event]
                    status, body, replayed = 200, {"resent": event["id"]}, False
                else:
                    account.count(method, url.path)
                    status, body, replayed, events = double.handle(
                        key, method, url.path, params, self.headers.get("idempotency-key")
                    )
                    to_send = [double.event(account, kind, obj) for kind, obj in events]
            # Answered first, then delivered: as on Stripe, a webhook may arrive before or after
            # the API answer it follows.
            self.answer(status, body, replayed)
            for event in to_send:
                double.deliver(account, event)

        def do_GET(self):
            self.serve("GET")

        def do_POST(self):
            self.serve("POST")

        def do_DELETE(self):
            self.serve("DELETE")

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--webhook-secret", required=True)
    parser.add_argument("--webhook-url", default=None)
    args = parser.parse_args()
    double = Double(args.webhook_secret, args.webhook_url)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(double))
    server.daemon_threads = True
    sys.stderr.write(f"stripe-double: listening on http://{args.host}:{args.port}\n")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
