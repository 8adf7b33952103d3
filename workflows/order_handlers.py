"""OrderWorkflow's signals, update and query, and the acceptance of a reported payment."""

from __future__ import annotations

from temporalio import workflow

from workflows.order_patches import MANUAL_CAPTURE
from workflows.order_refunds import OrderRefunds

with workflow.unsafe.imports_passed_through():
    from orderflow.contracts.order import (
        PAYABLE_STATUSES,
        CancelRequest,
        OrderState,
        OrderStatus,
        PaymentAck,
        PaymentFailed,
        PaymentReceived,
        Shipment,
    )
    from orderflow.money import format_money
    from workflows import acceptance


class OrderHandlers(OrderRefunds):
    """What the outside reports to an order (payments, failures, cancel, shipment) and asks it."""

    @workflow.update
    async def pay(self, payment: PaymentReceived) -> PaymentAck:
        """Report a payment and learn at once whether it was accepted.

        An authorisation the order refuses is released before the answer: nothing else would.
        """
        ack = self._accept(payment)
        if not ack.accepted and payment.authorised_only and self._patched(MANUAL_CAPTURE):
            note = await self._refund(ack.reason, payment, refused=True)
            self._note(note)
            ack.reason = f"{ack.reason}; {note}"
        return ack

    @workflow.update
    async def placed(self) -> OrderState:
        """Wait until the stock check has answered, then give the order's state.

        Sent with the start (update-with-start, `OrderClient.checkout`): the caller learns the
        order's total, or that it was REJECTED, in the round trip that starts it, and opens the
        gateway's checkout for exactly that total. Changes nothing in the order.
        """
        await workflow.wait_condition(lambda: self._status != OrderStatus.NEW)
        return self.status()

    @workflow.signal
    def payment_received(self, payment: PaymentReceived) -> None:
        """Report a payment (fire-and-forget)."""
        self._accept(payment)

    @workflow.signal
    def payment_failed(self, failure: PaymentFailed) -> None:
        """A capture failed at the gateway: retry it (once per order)."""
        if self._payment is not None or self._cancel is not None:
            return
        attempt = (failure.payment_id, failure.attempt_id)
        if any((f.payment_id, f.attempt_id) == attempt for f in self._failures):
            return  # a redelivered failure is one failure
        self._failures.append(failure)
        self._note(f"payment {failure.payment_id} failed: {failure.reason}")
        if self._status != OrderStatus.PAYMENT_RETRYING:
            self._retry_wanted = True

    @workflow.signal
    def cancel(self, request: CancelRequest) -> None:
        """Cancel the order; ignored once it shipped or ended."""
        if self._cancel is None and self._status not in (
            OrderStatus.SHIPPED,
            OrderStatus.CANCELLED,
        ):
            self._cancel = request

    @workflow.signal
    def shipped(self, shipment: Shipment) -> None:
        """The warehouse shipped the order."""
        if self._shipment is None:
            self._shipment = shipment

    @workflow.query
    def status(self) -> OrderState:
        """The current status and its history."""
        return OrderState(
            order_id=self._order.order_id,
            status=self._status,
            total=self._total,
            currency=self._currency,
            history=self._history,
            payment_id=self._payment.payment_id if self._payment else "",
            failed_payments=len(self._failures),
            review_id=self._review_id,
            flagged=self._payment.flagged if self._payment else False,
        )

    def _flag_late(self, payment: PaymentReceived) -> None:
        """The gateway's fraud flag came after the payment (Stripe: charge after payment_intent).

        Before the review decision the order goes to review as flagged; after it, the order
        (paid, confirmed or shipped) is marked flagged for an operator.
        """
        assert self._payment is not None
        self._payment.flagged = True
        self._note(f"payment {payment.payment_id} flagged as risky by {payment.provider}")
        if self._status not in {OrderStatus.NEW, *PAYABLE_STATUSES}:
            workflow.logger.warning(
                "order %s is %s and its payment %s was flagged as risky afterwards",
                self._order.order_id,
                self._status,
                payment.payment_id,
            )

    def _accept(self, payment: PaymentReceived) -> PaymentAck:
        order_id = self._order.order_id
        if self._payment is not None:
            if self._payment.payment_id == payment.payment_id:
                if payment.flagged and not self._payment.flagged:
                    self._flag_late(payment)
                return PaymentAck(
                    accepted=True, status=self._status, reason="duplicate: payment already accepted"
                )
            self._note(
                f"refused second payment {payment.payment_id}: already paid by {self._payment.payment_id}"
            )
            return PaymentAck(
                accepted=False,
                status=self._status,
                reason=f"order {order_id} is already paid by {self._payment.payment_id}",
            )
        if self._cancel is not None or self._status not in {OrderStatus.NEW, *PAYABLE_STATUSES}:
            self._note(f"refused payment {payment.payment_id}: order is {self._status}")
            return PaymentAck(
                accepted=False,
                status=self._status,
                reason=f"order {order_id} is {self._status}: payment refused",
            )
        if self._status != OrderStatus.NEW and (
            refused := acceptance.refusal(payment, self._due())
        ):
            self._note(refused.note)
            return PaymentAck(accepted=False, status=self._status, reason=refused.reason)
        self._payment = payment
        self._note(
            f"payment {payment.payment_id} received"
            f" ({format_money(payment.amount, payment.currency or self._currency)}, {payment.provider})"
        )
        return PaymentAck(accepted=True, status=self._status)
