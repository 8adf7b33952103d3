"""Temporal's TracingInterceptor, with signals and updates continuing their sender's trace.

Stock TracingInterceptor puts every workflow span under the trace that started the workflow and
only *links* an incoming signal or update. An order is started at checkout and paid much later
through a gateway webhook, so the spans of the payment (its update, the confirmation activities,
the confirmation mail) would land in the checkout's trace. Here a signal or update that carries
a trace context is handled as a child of its sender's span, and the activities and child
workflows the workflow starts after it join that trace: one trace runs from the webhook request
to the SMTP send. Messages without a context (e.g. from an untraced script) change nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import opentelemetry.trace
from opentelemetry.context import Context
from temporalio.api.common.v1 import Payload
from temporalio.contrib.opentelemetry import TracingInterceptor, TracingWorkflowInboundInterceptor
from temporalio.contrib.opentelemetry._context import attached_context
from temporalio.contrib.opentelemetry._interceptor import _TracingWorkflowOutboundInterceptor
from temporalio.worker import (
    HandleSignalInput,
    HandleUpdateInput,
    StartActivityInput,
    StartChildWorkflowInput,
    StartLocalActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)
from temporalio.workflow import ActivityHandle, ChildWorkflowHandle

T = TypeVar("T")


class _Headers:
    """Receives the carrier of a span created by TracingWorkflowInboundInterceptor._completed_span."""

    def __init__(self) -> None:
        self.headers: Mapping[str, Payload] = {}


class CausalWorkflowInboundInterceptor(TracingWorkflowInboundInterceptor):
    """Handles traced signals/updates in their sender's trace; later starts join that trace."""

    def __init__(self, next: WorkflowInboundInterceptor) -> None:
        super().__init__(next)
        self.causal_context: Context | None = None

    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        """Wrap the outbound calls so that they start in the latest message's trace."""
        WorkflowInboundInterceptor.init(self, _CausalOutboundInterceptor(outbound, self))

    async def handle_signal(self, input: HandleSignalInput) -> None:
        """A signal with a trace context runs as a child of its sender's span."""
        carrier = self._carrier(input.headers)
        if carrier is None:
            return await super().handle_signal(input)
        await self._in_sender_trace(
            carrier, f"HandleSignal:{input.signal}", lambda: self.next.handle_signal(input)
        )

    async def handle_update_handler(self, input: HandleUpdateInput) -> Any:
        """An update with a trace context runs as a child of its sender's span."""
        carrier = self._carrier(input.headers)
        if carrier is None:
            return await super().handle_update_handler(input)
        return await self._in_sender_trace(
            carrier, f"HandleUpdate:{input.update}", lambda: self.next.handle_update_handler(input)
        )

    def _carrier(self, headers: Mapping[str, Payload]) -> dict[str, str] | None:
        header = headers.get(self.header_key)
        if not header:
            return None
        carrier = self.payload_converter.from_payloads([header])[0]
        return carrier if isinstance(carrier, dict) and carrier else None

    async def _in_sender_trace(
        self, carrier: dict[str, str], name: str, call: Callable[[], Awaitable[T]]
    ) -> T:
        sent = self._set_on_context(self.text_map_propagator.extract(carrier))
        span = _Headers()
        with attached_context(sent):
            self._completed_span(
                name, add_to_outbound=span, kind=opentelemetry.trace.SpanKind.SERVER
            )
        handled = self._carrier(span.headers) or carrier  # on replay no span is made
        self.causal_context = self._set_on_context(self.text_map_propagator.extract(handled))
        with attached_context(self.causal_context):
            return await call()


class _CausalOutboundInterceptor(_TracingWorkflowOutboundInterceptor):
    root: CausalWorkflowInboundInterceptor

    def start_activity(self, input: StartActivityInput) -> ActivityHandle[Any]:
        with attached_context(self.root.causal_context):
            return super().start_activity(input)

    def start_local_activity(self, input: StartLocalActivityInput) -> ActivityHandle[Any]:
        with attached_context(self.root.causal_context):
            return super().start_local_activity(input)

    async def start_child_workflow(
        self, input: StartChildWorkflowInput
    ) -> ChildWorkflowHandle[Any, Any]:
        with attached_context(self.root.causal_context):
            return await super().start_child_workflow(input)


class CausalTracingInterceptor(TracingInterceptor):
    """TracingInterceptor (client and worker) whose workflows follow their signals' traces."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[TracingWorkflowInboundInterceptor]:
        """The causal workflow interceptor (with the externs the stock one needs)."""
        super().workflow_interceptor_class(input)
        return CausalWorkflowInboundInterceptor
