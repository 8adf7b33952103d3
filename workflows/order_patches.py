"""OrderWorkflow's patch ids, and the set of them decided as the order starts."""

# workflow.patched ids: each guards a change that adds commands (docs/VERSIONING.md)
EARLY_PAYMENT_AMOUNT_CHECK = "early-payment-amount-check"
RETRY_FINISHES_CAPTURE = "retry-finishes-capture"
REVIEW_ENDS_ON_CANCEL = "review-ends-on-cancel"
RETRY_CAPTURE_IS_NOT_ITS_OWN_DUPLICATE = "retry-capture-is-not-its-own-duplicate"
MANUAL_CAPTURE = "manual-capture"  # an authorisation is captured after review, released on cancel
RETRY_CAPTURED_THE_HOLD = "retry-captured-the-hold"  # a retry's capture of an accepted hold
# a refused hold that was captured after all is refunded by a child of its own id, beside the
# order's own refund (the `pay` update runs beside the order's run)
REFUSED_HOLD_REFUND_APART = "refused-hold-refund-apart"
# a payment accepted in the activation that ends the capture retry or the auto-cancel timer
PAID_AS_RETRY_ENDED = "paid-as-retry-ended"  # the retry's capture is then the duplicate
PAID_AS_TIMER_FIRED = "paid-as-timer-fired"  # the payment came in time: the order is paid
# a hold that was not released is looked up at the gateway: captured → refunded what was
# taken, in its currency; held or unknown → REFUND_FAILED for an operator (was: "it lapses")
HOLD_LOOKED_UP = "hold-looked-up"
# a hold above the total only where the provider can capture part of it (not Razorpay)
WHOLE_HOLD_ONLY = "whole-hold-only"
# a payment the order refuses and refunds gets its row before its refund gets one
REFUSED_PAYMENT_RECORDED = "refused-payment-recorded"
# a payment that names no currency is refused (every sender inside names the order's)
EMPTY_CURRENCY_REFUSED = "empty-currency-refused"
# Every id above, decided once as the order starts: an order started with this marker has all
# of those changes and records no other marker for them. A marker recorded right after
# place_order (a local activity) failed replay where that activity's marker ended the workflow
# task before it (seen on the time-skipping server): replay resolves the activity before it
# learns of the next task's markers. Orders started before still ask each id where they did.
PATCHES_AT_START = "patches-decided-at-start"
FOLDED_PATCHES = frozenset(
    {
        EARLY_PAYMENT_AMOUNT_CHECK,
        RETRY_FINISHES_CAPTURE,
        REVIEW_ENDS_ON_CANCEL,
        RETRY_CAPTURE_IS_NOT_ITS_OWN_DUPLICATE,
        MANUAL_CAPTURE,
        RETRY_CAPTURED_THE_HOLD,
        REFUSED_HOLD_REFUND_APART,
        PAID_AS_RETRY_ENDED,
        PAID_AS_TIMER_FIRED,
        HOLD_LOOKED_UP,
        WHOLE_HOLD_ONLY,
        REFUSED_PAYMENT_RECORDED,
        EMPTY_CURRENCY_REFUSED,
    }
)
