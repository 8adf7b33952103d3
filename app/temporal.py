"""Connecting to Temporal, traced."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.runtime import Runtime

from app.temporal_tracing import CausalTracingInterceptor
from orderflow.codec import data_converter
from orderflow.settings import Settings


async def connect(settings: Settings, *, runtime: Runtime | None = None) -> Client:
    """A client for the configured server and namespace, traced and with customer data
    encrypted (orderflow/codec.py); workers built from it share both."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        interceptors=[CausalTracingInterceptor()],
        data_converter=data_converter(settings.codec_keyring()),
        runtime=runtime,
    )
