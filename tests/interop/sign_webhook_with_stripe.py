"""Stripe's own Python library on our webhook signatures, both ways.

  sign_webhook_with_stripe.py sign SECRET PAYLOAD [TIMESTAMP]
      prints the Stripe-Signature header Stripe's library computes for PAYLOAD
      (`stripe.WebhookSignature.generate_signature_header`); our endpoint must accept it.
  sign_webhook_with_stripe.py verify SECRET PAYLOAD HEADER
      exits 0 when Stripe's library verifies HEADER (one we computed) for PAYLOAD, else 1
      with the library's message.
"""

import sys
import time

import stripe


def main() -> None:
    mode, secret, payload = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "sign":
        timestamp = int(sys.argv[4]) if len(sys.argv) > 4 else int(time.time())
        print(stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp), end="")
    elif mode == "verify":
        try:
            stripe.WebhookSignature.verify_header(payload, sys.argv[4], secret, tolerance=300)
        except stripe.SignatureVerificationError as error:
            sys.exit(f"SignatureVerificationError: {error}")
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
