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
        PaymentAttempt,
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


@workflow.defn
class PaymentRetryWorkflow:
    """Each attempt is one gateway call; the timer between attempts survives restarts."""

    def __init__(self) -> None:
        self._attempts: list[PaymentAttempt] = []
        self._stop_reason = ""

    @workflow.run
    async def run(self, data: PaymentRetryInput) -> PaymentRetryResult:
        """Try until one attempt succeeds or all are used."""
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
            request = GatewayRequest(
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
                continue
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
        return PaymentRetryResult(
            order_id=data.order_id,
            kind=data.kind,
            succeeded=False,
            attempts=self._attempts,
            stopped=self._stop_reason,
        )

    @workflow.signal
    def stop(self, reason: str) -> None:
        """No further attempts; an attempt already at the gateway finishes and is reported."""
        self._stop_reason = self._stop_reason or reason or "stopped"

    @workflow.query
    def attempts(self) -> list[PaymentAttempt]:
        """The attempts made so far."""
        return self._attempts
