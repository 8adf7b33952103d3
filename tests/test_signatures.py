"""Our webhook signatures against the gateways' own Python packages, both ways."""

from __future__ import annotations

import contextlib
import hmac
import json
import time
from unittest.mock import patch

import pytest
import razorpay
import stripe

from orderflow.errors import OrderflowError
from orderflow.settings import Settings
from payments.providers import signed_headers
from payments.providers.razorpay import sign_razorpay, verify_razorpay
from payments.providers.stripe import parse_stripe_header, sign_stripe, verify_stripe
from payments.signatures import SignatureError

SECRET = "whsec_test_secret"
BODY = json.dumps(
    {
        "id": "evt_sig_1",
        "object": "event",
        "type": "payment_intent.succeeded",
        "data": {"object": {}},
    }
).encode()


def test_stripe_verifies_our_signature() -> None:
    header = sign_stripe(BODY, SECRET)
    assert stripe.WebhookSignature.verify_header(BODY, header, SECRET, tolerance=300)
    assert stripe.Webhook.construct_event(BODY, header, SECRET).id == "evt_sig_1"


def test_we_verify_stripes_signature() -> None:
    header = stripe.WebhookSignature.generate_signature_header(BODY.decode(), SECRET)
    assert verify_stripe(BODY, header, SECRET) == int(header.split(",")[0][2:])
    t = int(time.time())
    raw = stripe.WebhookSignature._compute_signature(f"{t}.{BODY.decode()}", SECRET)
    assert verify_stripe(BODY, f"t={t},v1={raw}", SECRET) == t


def test_stripe_rejects_what_we_reject() -> None:
    stale = sign_stripe(BODY, SECRET, int(time.time()) - 301)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(BODY, stale, SECRET, tolerance=300)
    with pytest.raises(SignatureError, match="outside the 300s tolerance"):
        verify_stripe(BODY, stale, SECRET)
    wrong = sign_stripe(BODY, "whsec_other")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(BODY, wrong, SECRET)
    with pytest.raises(SignatureError, match="no v1 signature matches"):
        verify_stripe(BODY, wrong, SECRET)


def test_stripe_any_of_several_v1_signatures_matches() -> None:
    t = int(time.time())
    good = sign_stripe(BODY, SECRET, t).split(",")[1]
    other = sign_stripe(BODY, "whsec_old", t).split(",")[1]
    header = f"t={t},{other},{good},v0=deadbeef"
    assert verify_stripe(BODY, header, SECRET) == t
    assert stripe.WebhookSignature.verify_header(BODY, header, SECRET)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "header is missing"),
        ("", "header is missing"),
        ("v1=abc", "no timestamp"),
        ("t=abc,v1=abc", "not an integer"),
        (f"t={int(time.time())}", "no v1 signature in"),
        (f"t={int(time.time())},v0=abc", "no v1 signature in"),
    ],
)
def test_stripe_malformed_headers(header: str | None, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason) as info:
        verify_stripe(BODY, header, SECRET)
    assert isinstance(info.value, OrderflowError)
    assert info.value.provider == "stripe"


def test_stripe_tampered_body_and_future_timestamp() -> None:
    header = sign_stripe(BODY, SECRET)
    with pytest.raises(SignatureError):
        verify_stripe(BODY.replace(b"evt_sig_1", b"evt_sig_2"), header, SECRET)
    future = sign_stripe(BODY, SECRET, int(time.time()) + 3600)
    with pytest.raises(SignatureError, match="tolerance"):
        verify_stripe(BODY, future, SECRET)
    assert parse_stripe_header(" t=5 , v1=a ,v1=b") == (5, ["a", "b"])


def razorpay_computed_signature(body: str, secret: str) -> str:
    """The signature Razorpay's package computes for a body (it has no signing API, only verify)."""
    seen: list[str] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        seen.append(a)
        return real(a, b)

    with (
        patch("razorpay.utility.utility.hmac.compare_digest", spy),
        contextlib.suppress(razorpay.errors.SignatureVerificationError),
    ):
        razorpay.Utility().verify_webhook_signature(body, "x", secret)
    return seen[0]


def test_razorpay_verifies_our_signature_and_we_verify_theirs() -> None:
    text = BODY.decode()
    ours = sign_razorpay(BODY, SECRET)
    assert razorpay.Utility().verify_webhook_signature(text, ours, SECRET)
    verify_razorpay(BODY, razorpay_computed_signature(text, SECRET), SECRET)
    with pytest.raises(razorpay.errors.SignatureVerificationError):
        razorpay.Utility().verify_webhook_signature(text, sign_razorpay(BODY, "other"), SECRET)
    with pytest.raises(SignatureError, match="does not match"):
        verify_razorpay(BODY, sign_razorpay(BODY, "other"), SECRET)
    with pytest.raises(SignatureError, match="does not match"):
        verify_razorpay(BODY + b" ", ours, SECRET)
    with pytest.raises(SignatureError, match="missing"):
        verify_razorpay(BODY, None, SECRET)


def test_signed_headers_use_the_configured_secrets() -> None:
    settings = Settings(stripe_webhook_secret=SECRET, razorpay_webhook_secret="rzp_secret")
    stripe_headers = signed_headers("stripe", BODY, settings)
    assert stripe.WebhookSignature.verify_header(BODY, stripe_headers["Stripe-Signature"], SECRET)
    rzp = signed_headers("razorpay", BODY, settings, event_id="evt_rzp_1")
    assert rzp["X-Razorpay-Event-Id"] == "evt_rzp_1"
    assert razorpay.Utility().verify_webhook_signature(
        BODY.decode(), rzp["X-Razorpay-Signature"], "rzp_secret"
    )
    with pytest.raises(OrderflowError, match="unknown webhook provider 'paypal'"):
        signed_headers("paypal", BODY, settings)
