"""Golden histories: orders recorded by earlier code must replay against the current code.

A change to a workflow that would break an order already running (a command added, removed or
reordered without `workflow.patched`) fails here. tests/histories/record.py records the files;
docs/VERSIONING.md says how to change a workflow safely.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from orderflow import codec
from tests.payload_walk import cleartext_payloads, leaks, payloads
from tests.temporal_env import TEST_CODEC_KEY, TEST_KEYRING
from workflows.cleanup import QueueCleanupWorkflow
from workflows.inventory import InventoryReleaseWorkflow
from workflows.order import EARLY_PAYMENT_AMOUNT_CHECK, OrderWorkflow
from workflows.payment import PaymentRetryWorkflow
from workflows.reconciliation import PaymentReconciliationWorkflow
from workflows.reports import DailyReportWorkflow
from workflows.review import ManualReviewWorkflow
from workflows.stock_sync import StockSyncWorkflow

# the goldens recorded before the codec are in clear (passed through); later ones encrypted
TEST_CONVERTER = codec.data_converter(TEST_KEYRING)

HISTORIES = Path(__file__).resolve().parent / "histories"
GOLDEN = sorted(HISTORIES.glob("*.json"))
ALL_WORKFLOWS = [
    OrderWorkflow,
    PaymentRetryWorkflow,
    ManualReviewWorkflow,
    InventoryReleaseWorkflow,
    StockSyncWorkflow,
    DailyReportWorkflow,
    QueueCleanupWorkflow,
    PaymentReconciliationWorkflow,
]
# the main path of every workflow type; a path's files are <path>.<WorkflowType>.json
REQUIRED = {
    "paid": ["OrderWorkflow"],
    "expired": ["OrderWorkflow", "InventoryReleaseWorkflow"],
    "declined-then-retried": ["OrderWorkflow", "PaymentRetryWorkflow"],
    "reviewed": ["OrderWorkflow", "ManualReviewWorkflow"],
    "cancelled-with-refund": [
        "OrderWorkflow",
        "PaymentRetryWorkflow",
        "InventoryReleaseWorkflow",
    ],
    "returned": ["OrderWorkflow", "ManualReviewWorkflow", "PaymentRetryWorkflow"],
    # recorded before the `early-payment-amount-check` patch: a running order of that release
    "early-short-payment": ["OrderWorkflow"],
    "early-short-payment-refused": ["OrderWorkflow", "PaymentRetryWorkflow"],
}
# money in integer minor units with its currency (a new payload shape): the main paths again
REQUIRED |= {f"minor-units.{path}": kinds for path, kinds in list(REQUIRED.items())[:6]}
# manual capture: an authorisation reviewed then captured; one refused and one released
REQUIRED |= {
    "manual-capture": ["OrderWorkflow", "PaymentRetryWorkflow"],
    "manual-capture-released": ["OrderWorkflow"],
}
# issue 18: a refused early payment is recorded before its refund (refused-payment-recorded)
REQUIRED["early-short-payment-recorded"] = ["OrderWorkflow", "PaymentRetryWorkflow"]
# issue 18: every patch decided as the order starts (patches-decided-at-start)
REQUIRED["early-short-payment-at-start"] = ["OrderWorkflow", "PaymentRetryWorkflow"]
# issue 21: customer data encrypted (orderflow/codec.py, the suite's key TEST_CODEC_KEY): the
# main paths, the current start (every patch decided at start) and a manual capture again
ENCRYPTED_PATHS = [*list(REQUIRED)[:6], "early-short-payment-at-start", "manual-capture"]
REQUIRED |= {f"codec.{path}": REQUIRED[path] for path in ENCRYPTED_PATHS}
ENCRYPTED = sorted(HISTORIES.glob("codec.*.json"))


def test_every_main_path_has_its_golden_histories() -> None:
    names = {path.name for path in GOLDEN}
    missing = [
        f"{path}.{kind}.json"
        for path, kinds in REQUIRED.items()
        for kind in kinds
        if f"{path}.{kind}.json" not in names
    ]
    assert not missing, f"golden histories missing from {HISTORIES}: {missing}"


def load(golden: Path) -> WorkflowHistory:
    """A golden file as a history; its workflow id is the file's stem."""
    return WorkflowHistory.from_json(golden.stem, golden.read_text())


@pytest.mark.parametrize("golden", GOLDEN, ids=[path.stem for path in GOLDEN])
async def test_golden_history_replays_against_current_code(golden: Path) -> None:
    history = load(golden)
    replayer = Replayer(workflows=ALL_WORKFLOWS, data_converter=TEST_CONVERTER)
    outcome = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    failure = outcome.replay_failure
    assert failure is None, f"{golden.name} no longer replays: {str(failure)[:400]}"


def patch_ids(history: WorkflowHistory) -> set[str]:
    """The `workflow.patched` ids a history recorded (its core_patch markers)."""
    found = set()
    for event in history.events:
        marker = event.marker_recorded_event_attributes
        if (
            event.HasField("marker_recorded_event_attributes")
            and marker.marker_name == "core_patch"
        ):
            found.add(json.loads(marker.details["patch-data"].payloads[0].data)["id"])
    return found


async def test_an_order_started_before_the_early_payment_check_replays_on_the_patched_code() -> (
    None
):
    """The example of docs/VERSIONING.md: the old path replays, the new one carries the marker."""
    old = load(HISTORIES / "early-short-payment.OrderWorkflow.json")
    new = load(HISTORIES / "early-short-payment-refused.OrderWorkflow.json")
    assert patch_ids(old) == set() and patch_ids(new) == {EARLY_PAYMENT_AMOUNT_CHECK}
    replayer = Replayer(workflows=ALL_WORKFLOWS, data_converter=TEST_CONVERTER)
    for history in (old, new):
        outcome = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        failure = outcome.replay_failure
        assert failure is None, f"{history.workflow_id}: {str(failure)[:400]}"


# what record.py gives every order: emails, payment ids, carriers (SKUs are <name>-<hex>)
CUSTOMER_DATA = ["@example.com", "pay-", "pi_held_", "BlueDart", "DTDC", "wrong size"]


@pytest.mark.parametrize("golden", ENCRYPTED, ids=[path.stem for path in ENCRYPTED])
def test_an_encrypted_golden_history_holds_no_customer_data_in_clear(golden: Path) -> None:
    history = load(golden)
    found = payloads(history)
    assert not cleartext_payloads(history), cleartext_payloads(history)
    assert {f.key_id for f in found if f.encrypted} == {TEST_CODEC_KEY.key_id}
    assert not leaks(history, CUSTOMER_DATA), leaks(history, CUSTOMER_DATA)
    assert "@example.com" not in golden.read_text()
    # the same path recorded in clear shows what would be there (the check can fail)
    clear = load(HISTORIES / golden.name.removeprefix("codec."))
    if clear.events[0].workflow_execution_started_event_attributes.workflow_type.name == (
        "OrderWorkflow"
    ):
        assert leaks(clear, ["@example.com"]), f"{golden.name}'s clear twin has no email"
        opened = b"".join(
            codec.EncryptionCodec(TEST_KEYRING).decode_one(f.payload).data
            for f in found
            if f.encrypted
        )
        assert b"@example.com" in opened, f"{golden.name}: no email under the codec either"


@pytest.mark.parametrize(
    ("keyring", "error"),
    [
        (
            codec.Keyring(codec.new_key("other")),
            f"payload encrypted with codec key {TEST_CODEC_KEY.key_id!r}, which this process"
            " does not have (it has 'other')",
        ),
        (
            codec.Keyring(codec.CodecKey(TEST_CODEC_KEY.key_id, bytes(32))),
            f"payload under codec key {TEST_CODEC_KEY.key_id!r} does not decrypt",
        ),
    ],
    ids=["unknown-key-id", "same-id-other-secret"],
)
async def test_an_encrypted_golden_does_not_replay_with_a_wrong_key_and_the_error_names_it(
    keyring: codec.Keyring, error: str
) -> None:
    replayer = Replayer(workflows=ALL_WORKFLOWS, data_converter=codec.data_converter(keyring))
    for path in ENCRYPTED_PATHS[:2]:
        history = load(HISTORIES / f"codec.{path}.OrderWorkflow.json")
        outcome = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert outcome.replay_failure is not None, f"codec.{path} replayed with a wrong key"
        assert error in str(outcome.replay_failure), str(outcome.replay_failure)[:400]
