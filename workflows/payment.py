"""PaymentRetryWorkflow: a capture or refund tried up to N times, an interval apart."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.payment import PaymentActivities
    from orderflow.contracts.payment import (
        GatewayRequest,
        GatewayResponse,
        PaymentAttempt,
        PaymentKind,
        PaymentRetryInput,
        PaymentRetryResult,
        gateway_idempotency_key,
    )

# transport failures (gateway unreachable) are retried inside one attempt; declines are not
GATEWAY_CALL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=10,
)
# asking again under the key of a capture whose outcome is unknown: until the gateway answers
# (a refusal of our setup still ends it), every few minutes at most, for an hour at most
ASK_AGAIN_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=0,
)
ASK_AGAIN_FOR = timedelta(hours=1)
# workflow.patched id: a capture attempt that ended in a gateway error may have moved the money;
# before the retries end with it (stopped, or the last attempt) it is asked again under its key
UNKNOWN_CAPTURE_ASKED_AGAIN = "unknown-capture-asked-again"


@workflow.defn
class PaymentRetryWorkflow:
    """Each attempt is one gateway call; the timer between attempts survives restarts."""

    def __init__(self) -> None:
        self._attempts: list[PaymentAttempt] = []
        self._stop_reason = ""

    @workflow.run
    async def run(self, data: PaymentRetryInput) -> PaymentRetryResult:
        """Try until one attempt succeeds or all are used."""
        unknown: GatewayRequest | None = None  # the last attempt, when it ended in an error
        for n in range(1, data.attempts + 1):
            if n > 1:
                # the timer between attempts; a stop ends the retries at once
                try:
                    await workflow.wait_condition(
                        lambda: bool(self._stop_reason),
                        timeout=timedelta(seconds=data.interval_seconds),
                        timeout_summary="next attempt",
                    )
                except TimeoutError:
                    pass
            if self._stop_reason:
                break
            request = self._request(data, n)
            try:
                response = await workflow.execute_activity_method(
                    PaymentActivities.call_gateway,
                    request,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=GATEWAY_CALL_RETRY,
                )
            except ActivityError as err:
                if is_cancelled_exception(err):
                    raise  # the order stopped the retries (paid or cancelled meanwhile)
                self._attempts.append(
                    PaymentAttempt(attempt=n, succeeded=False, detail=f"gateway error: {err.cause}")
                )
                unknown = request
                continue
            unknown = None
            self._attempts.append(
                PaymentAttempt(
                    attempt=n,
                    succeeded=response.succeeded,
                    payment_id=response.payment_id,
                    detail=response.detail,
                )
            )
            if response.succeeded:
                return PaymentRetryResult(
                    order_id=data.order_id,
                    kind=data.kind,
                    succeeded=True,
                    payment_id=response.payment_id,
                    provider=response.provider,
                    attempts=self._attempts,
                )
        # the next attempt would have found what an errored one moved (the gateway looks for an
        # earlier retry's payment); without one, only asking again under its key can tell
        # a hold is not asked again: the order releases it, and looks up what became of it when
        # the release fails (a capture that landed is then refunded, nothing new is taken)
        if (
            unknown is not None
            and data.kind is PaymentKind.CAPTURE
            and not data.authorisation
            and workflow.patched(UNKNOWN_CAPTURE_ASKED_AGAIN)
        ):
            found = await self._ask_again(unknown)
            if found is not None:
                return PaymentRetryResult(
                    order_id=data.order_id,
                    kind=data.kind,
                    succeeded=True,
                    payment_id=found.payment_id,
                    provider=found.provider,
                    attempts=self._attempts,
                    stopped=self._stop_reason,
                )
        return PaymentRetryResult(
            order_id=data.order_id,
            kind=data.kind,
            succeeded=False,
            attempts=self._attempts,
            stopped=self._stop_reason,
        )

    @staticmethod
    def _request(data: PaymentRetryInput, n: int) -> GatewayRequest:
        """Attempt n's call: its own idempotency key, the same for every try of the attempt."""
        return GatewayRequest(
            order_id=data.order_id,
            kind=data.kind,
            amount=data.amount,
            attempt=n,
            currency=data.currency,
            payment_id=data.payment_id,
            # never the run id: a reset or continued run must not charge a second time
            idempotency_key=gateway_idempotency_key(
                data.order_id, data.kind, n, data.payment_id, held=data.authorisation
            ),
        )

    async def _ask_again(self, request: GatewayRequest) -> GatewayResponse | None:
        """The errored attempt's call once more, under its own key, until the gateway answers.

        A key that moved money answers that movement and moves nothing again (Stripe keeps a
        key 24 hours, and the gateways look for an earlier retry's payment beyond that). If the
        first call never landed, this one may capture now: the order then refunds it when it
        is cancelled or already paid, so the money is right either way. None: nothing moved.
        """
        try:
            response = await workflow.execute_activity_method(
                PaymentActivities.call_gateway,
                request,
                start_to_close_timeout=timedelta(seconds=30),
                # well inside the gateways' idempotency window (Stripe: 24 h); then unknown
                schedule_to_close_timeout=ASK_AGAIN_FOR,
                retry_policy=ASK_AGAIN_RETRY,
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            workflow.logger.error(
                "capture %s of order %s: outcome unknown, the gateway refused to answer: %s",
                request.idempotency_key,
                request.order_id,
                err.cause,
            )
            self._attempts.append(
                PaymentAttempt(
                    attempt=request.attempt,
                    succeeded=False,
                    detail=f"outcome unknown (asked again): {err.cause}",
                )
            )
            return None
        self._attempts.append(
            PaymentAttempt(
                attempt=request.attempt,
                succeeded=response.succeeded,
                payment_id=response.payment_id,
                detail=f"asked again: {response.detail}",
            )
        )
        return response if response.succeeded else None

    @workflow.signal
    def stop(self, reason: str) -> None:
        """No further attempts; an attempt already at the gateway finishes and is reported."""
        self._stop_reason = self._stop_reason or reason or "stopped"

    @workflow.query
    def attempts(self) -> list[PaymentAttempt]:
        """The attempts made so far."""
        return self._attempts
