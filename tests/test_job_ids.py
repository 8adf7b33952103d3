"""Custom job ids are checked by the producer as Node BullMQ checks them, and then some."""

from __future__ import annotations

import pytest

from bridge.errors import InvalidJobOptionsError
from bridge.producer import QueueProducer, check_job_id
from orderflow.settings import Settings
from payments.events import MalformedEventError
from payments.providers import parse_event
from payments.providers.stripe import stripe_payment_succeeded
from tests.bridge_helpers import counts, unique_spec


@pytest.mark.parametrize(
    ("job_id", "why"),
    [
        ("order-confirmation:o1", "cannot contain ':'"),  # Node: 'Custom Id cannot contain :'
        ("repeat:key:1700000000000", "cannot contain ':'"),  # Node's legacy form: ours refuses
        ("123", "cannot be an integer"),  # Node: 'Custom Id cannot be integers'
        ("-5", "cannot be an integer"),
        ("0", "cannot be an integer"),
        ("", "cannot be empty"),
        ("welcome\n1", "control character"),
        ("welcome\x001", "control character"),
        ("welcome\r", "control character"),
        ("x\x7f", "control character"),
        ("id", "names one of the queue's own keys"),  # the job counter: WRONGTYPE for every fetch
        ("meta", "names one of the queue's own keys"),
        ("wait", "names one of the queue's own keys"),
        ("marker", "names one of the queue's own keys"),
        ("orderflow-rate", "names one of the queue's own keys"),
    ],
)
def test_producer_refuses_job_ids_node_bullmq_refuses(job_id: str, why: str) -> None:
    with pytest.raises(InvalidJobOptionsError) as refused:
        check_job_id(job_id)
    message = str(refused.value)
    assert why in message
    assert "\n" not in message and "\x00" not in message  # the id is shown escaped


@pytest.mark.parametrize(
    "job_id", ["order-confirmation-o1", "0123", "-0", "1.5", "1e3", " 12", "stripe-evt_1Nq", "ünï"]
)
def test_producer_accepts_ids_node_bullmq_accepts(job_id: str) -> None:
    check_job_id(job_id)  # what Node accepts (parseInt round-trips only canonical integers)


async def test_refused_job_id_adds_nothing(redis_url: str) -> None:
    spec = unique_spec(Settings(redis_url=redis_url))
    producer = QueueProducer.connect(spec, redis_url)
    for bad in ("a:b", "line\nbreak", "nul\x00", 42):
        with pytest.raises(InvalidJobOptionsError, match=spec.name):
            await producer.add("send-welcome", {"to": "a@example.com"}, {"jobId": bad})
    assert sum((await counts(spec, redis_url)).values()) == 0
    await producer.close()


def test_gateway_event_id_that_cannot_be_a_job_id_is_a_malformed_event() -> None:
    body = stripe_payment_succeeded("o-1", 100, event_id="evt_1:2\n")
    with pytest.raises(MalformedEventError, match="cannot be a job id") as refused:
        parse_event("stripe", body)
    assert "\n" not in str(refused.value)


async def test_job_id_naming_a_queue_key_cannot_poison_the_queue(redis_url: str) -> None:
    spec = unique_spec(Settings(redis_url=redis_url), rate_limit=None)
    producer = QueueProducer.connect(spec, redis_url)
    await producer.add("send-welcome", {"to": "a@example.com"})  # creates the 'id' counter
    for key in ("id", "meta", "events", "stalled-check"):
        with pytest.raises(InvalidJobOptionsError, match="queue's own keys"):
            await producer.add("send-welcome", {"to": "a@example.com"}, {"jobId": key})
    assert (await counts(spec, redis_url))["waiting"] == 1
    await producer.close()
