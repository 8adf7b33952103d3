"""Golden histories: orders recorded by earlier code must replay against the current code.

A change to a workflow that would break an order already running (a command added, removed or
reordered without `workflow.patched`) fails here, naming the file and the first mismatching
command. It also fails when a workflow type of workflows/ (found by import) has no golden, when a
patch id the code asks has no golden of its branch before the patch (one where `patched` answers
False on replay), and when every such golden would replay with the guard removed as well.
tests/histories/record.py and record_prepatch.py record the files; docs/VERSIONING.md says how
to change a workflow safely.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from orderflow import codec
from orderflow.contracts.order import OrderInput
from tests.goldens import (
    patch_always_on,
    patch_ids_in_code,
    patched_answers,
    recorded_patch_ids,
    replay_failure_message,
    workflow_classes,
    workflow_errors,
)
from tests.payload_walk import cleartext_payloads, leaks, payloads
from tests.temporal_env import TEST_CODEC_KEY, TEST_KEYRING
from workflows.order import EARLY_PAYMENT_AMOUNT_CHECK

# the goldens recorded before the codec are in clear (passed through); later ones encrypted
TEST_CONVERTER = codec.data_converter(TEST_KEYRING)

HISTORIES = Path(__file__).resolve().parent / "histories"
GOLDEN = sorted(HISTORIES.glob("*.json"))
# every @workflow.defn in workflows/, found by importing its modules
WORKFLOWS = workflow_classes()
ALL_WORKFLOWS = list(WORKFLOWS.values())
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
# issue 23: the scheduled workflows, run as their schedules start them (record.py), and the
# branch before each patch, recorded with that patch off (record_prepatch.py); encrypted
REQUIRED |= {
    f"codec.{name}": [kind]
    for name, kind in [
        ("daily-report", "DailyReportWorkflow"),
        ("stock-sync", "StockSyncWorkflow"),
        ("queue-cleanup", "QueueCleanupWorkflow"),
        ("payment-reconciliation", "PaymentReconciliationWorkflow"),
    ]
}
ORDER_AND_RETRY = ["OrderWorkflow", "PaymentRetryWorkflow"]
CANCELLED_IN_REVIEW = [*ORDER_AND_RETRY, "ManualReviewWorkflow", "InventoryReleaseWorkflow"]
REQUIRED |= {
    "codec.before-retry-finishes-capture": ORDER_AND_RETRY,
    "codec.before-review-ends-on-cancel": CANCELLED_IN_REVIEW,
    "codec.before-retry-capture-is-not-its-own-duplicate": ORDER_AND_RETRY,
    "codec.before-retry-capture-is-not-its-own-duplicate-refund": ["PaymentRetryWorkflow"],
    "codec.before-manual-capture": ["OrderWorkflow"],
    "codec.before-retry-captured-the-hold": ORDER_AND_RETRY,
    "codec.before-refused-hold-refund-apart": ORDER_AND_RETRY,
    "codec.before-hold-looked-up": CANCELLED_IN_REVIEW,
    "codec.before-whole-hold-only": ORDER_AND_RETRY,
    "codec.before-unknown-capture-asked-again": [*ORDER_AND_RETRY, "InventoryReleaseWorkflow"],
    "codec.before-paid-as-retry-ended": ORDER_AND_RETRY,
    "codec.before-paid-as-timer-fired": [*ORDER_AND_RETRY, "InventoryReleaseWorkflow"],
}


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


def workflow_type(history: WorkflowHistory) -> str:
    return history.events[0].workflow_execution_started_event_attributes.workflow_type.name


@dataclass(frozen=True)
class Replayed:
    """A golden replayed against the current code."""

    failure: Exception | None
    old_branches: frozenset[str]
    """The patch ids `workflow.patched` answered False: the branch before each patch ran."""
    raised: tuple[str, ...]
    """What the workflow raised while replaying (a payload that no longer decodes)."""


_REPLAYED: dict[Path, Replayed] = {}


async def replay(golden: Path) -> Replayed:
    """Replay a golden once per process (the per-file test and the patch census share it)."""
    if golden not in _REPLAYED:
        history = load(golden)
        replayer = Replayer(workflows=ALL_WORKFLOWS, data_converter=TEST_CONVERTER)
        with (
            patched_answers(history.workflow_id) as answers,
            workflow_errors(history.workflow_id) as raised,
        ):
            outcome = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        old = frozenset(patch_id for patch_id, answer in answers if not answer)
        _REPLAYED[golden] = Replayed(outcome.replay_failure, old, tuple(raised))
    return _REPLAYED[golden]


@pytest.mark.parametrize("golden", GOLDEN, ids=[path.stem for path in GOLDEN])
async def test_golden_history_replays_against_current_code(golden: Path) -> None:
    replayed = await replay(golden)
    failure = replayed.failure
    assert failure is None, replay_failure_message(golden, load(golden), failure, replayed.raised)


@workflow.defn(name="OrderWorkflow", sandboxed=False)
class TimerFirstOrderWorkflow:
    """An OrderWorkflow changed without a patch: a timer first, before anything it did."""

    @workflow.run
    async def run(self, order: OrderInput) -> None:
        await workflow.sleep(60)


@workflow.defn(name="OrderWorkflow", sandboxed=False)
class RetypedOrderWorkflow:
    """An OrderWorkflow whose input changed so that a running order's no longer decodes."""

    @workflow.run
    async def run(self, order: int) -> None:
        await workflow.sleep(order)


@pytest.mark.parametrize(
    ("changed", "name", "expected"),
    [
        (
            TimerFirstOrderWorkflow,
            "paid.OrderWorkflow.json",
            [
                "[TMPRL1100] Nondeterminism error: Missing associated machine for LocalActivity(1)",
                "the golden has there: event 8: local activity place_order (seq 1)",
            ],
        ),
        (
            TimerFirstOrderWorkflow,
            "codec.paid.OrderWorkflow.json",
            [
                "[TMPRL1100] Nondeterminism error: Non-deprecated patch marker encountered for"
                " change patches-decided-at-start",
                "the golden has there: event 5: patch marker patches-decided-at-start",
            ],
        ),
        (
            RetypedOrderWorkflow,
            "codec.paid.OrderWorkflow.json",
            ["the workflow raised RuntimeError: Failed decoding arguments <- TypeError:"],
        ),
    ],
    ids=["command-changed", "patch-marker-unmatched", "input-no-longer-decodes"],
)
async def test_a_replay_failure_names_the_golden_and_its_first_mismatch(
    changed: type, name: str, expected: list[str]
) -> None:
    golden = HISTORIES / name
    history = load(golden)
    replayer = Replayer(workflows=[changed], data_converter=TEST_CONVERTER)
    with workflow_errors(history.workflow_id) as raised:
        outcome = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert outcome.replay_failure is not None, f"{name} replayed on {changed.__name__}"
    message = replay_failure_message(golden, history, outcome.replay_failure, raised)
    assert message.startswith(f"{name} no longer replays"), message
    for part in expected:
        assert part in message, message


def test_every_workflow_type_has_a_golden_history() -> None:
    """Every @workflow.defn of workflows/ (found by import) has a file `<path>.<Type>.json`
    whose history is of that type; a new workflow without one fails here."""
    assert len(WORKFLOWS) >= 8, f"workflows found by import: {sorted(WORKFLOWS)}"
    recorded: dict[str, list[str]] = {}
    for golden in GOLDEN:
        kind = workflow_type(load(golden))
        assert golden.stem.endswith(f".{kind}"), f"{golden.name} holds a {kind} history"
        recorded.setdefault(kind, []).append(golden.name)
    missing = sorted(set(WORKFLOWS) - set(recorded))
    assert not missing, (
        f"workflow types in workflows/ with no golden history in {HISTORIES}: {missing};"
        " record one (tests/histories/record.py) and name it <path>.<WorkflowType>.json"
    )


async def test_every_patch_in_the_code_has_a_golden_of_its_old_branch() -> None:
    """Every id the workflows ask `workflow.patched` (or `self._patched`) has a golden that
    replays through the branch before it: one where `patched` answers False (no marker)."""
    asked = patch_ids_in_code()
    assert len(asked) >= 15, f"patch ids found in workflows/: {sorted(asked)}"
    old_branch: dict[str, str] = {}
    for golden in GOLDEN:
        for patch_id in (await replay(golden)).old_branches:
            old_branch.setdefault(patch_id, golden.name)
    missing = {patch_id: where for patch_id, where in asked.items() if patch_id not in old_branch}
    assert not missing, (
        "patch ids whose branch before the patch no golden history replays (patched() never"
        f" answered False), with where the code asks them: {missing}; record one with"
        " tests/histories/record_prepatch.py"
    )


async def test_every_patch_guard_is_needed_by_a_golden_of_its_old_branch() -> None:
    """With a patch's `workflow.patched` answering True and recording nothing (the change
    shipped without its guard), one of the goldens of its old branch no longer replays: the
    golden covers what the patch changes (docs/VERSIONING.md, checklist step 4)."""
    unguarded = []
    for patch_id in patch_ids_in_code():
        olds = [g for g in GOLDEN if patch_id in (await replay(g)).old_branches]
        if not olds:
            continue  # told by the test above
        replayer = Replayer(workflows=ALL_WORKFLOWS, data_converter=TEST_CONVERTER)
        for golden in olds:
            history = load(golden)
            with patch_always_on(patch_id, history.workflow_id):
                outcome = await replayer.replay_workflow(history, raise_on_replay_failure=False)
            if outcome.replay_failure is not None:
                break
        else:
            unguarded.append(f"{patch_id}: {[g.name for g in olds]}")
    assert not unguarded, (
        "patches whose old-branch goldens all replay with the new branch as well (record a path"
        f" that the patch changes): {unguarded}"
    )


async def test_an_order_started_before_the_early_payment_check_replays_on_the_patched_code() -> (
    None
):
    """The example of docs/VERSIONING.md: the old path replays, the new one carries the marker."""
    old, new = (
        "early-short-payment.OrderWorkflow.json",
        "early-short-payment-refused.OrderWorkflow.json",
    )
    assert recorded_patch_ids(load(HISTORIES / old)) == set()
    assert recorded_patch_ids(load(HISTORIES / new)) == {EARLY_PAYMENT_AMOUNT_CHECK}
    for name in (old, new):
        replayed = await replay(HISTORIES / name)
        failure = replayed.failure
        assert failure is None, replay_failure_message(
            HISTORIES / name, load(HISTORIES / name), failure, replayed.raised
        )


# what record.py gives every order: emails, payment ids, carriers (SKUs are <name>-<hex>)
CUSTOMER_DATA = ["@example.com", "pay-", "pi_held_", "BlueDart", "DTDC", "wrong size"]


def test_every_encrypted_golden_is_named_codec_so_its_payloads_are_checked() -> None:
    unnamed = [
        golden.name
        for golden in GOLDEN
        if not golden.name.startswith("codec.") and any(f.encrypted for f in payloads(load(golden)))
    ]
    assert not unnamed, (
        f"encrypted goldens not named codec.* (ORDERFLOW_RECORD_RELEASE=codec): {unnamed}"
    )


@pytest.mark.parametrize("golden", ENCRYPTED, ids=[path.stem for path in ENCRYPTED])
def test_an_encrypted_golden_history_holds_no_customer_data_in_clear(golden: Path) -> None:
    history = load(golden)
    found = payloads(history)
    assert not cleartext_payloads(history), cleartext_payloads(history)
    assert {f.key_id for f in found if f.encrypted} == {TEST_CODEC_KEY.key_id}
    assert not leaks(history, CUSTOMER_DATA), leaks(history, CUSTOMER_DATA)
    assert "@example.com" not in golden.read_text()
    if workflow_type(history) != "OrderWorkflow":
        return
    # the same path recorded in clear, where there is one (recorded before the codec), shows
    # what would be there (the check can fail); the later ones have no clear twin
    twin = HISTORIES / golden.name.removeprefix("codec.")
    if twin.exists():
        assert leaks(load(twin), ["@example.com"]), f"{golden.name}'s clear twin has no email"
    opened = b"".join(
        codec.EncryptionCodec(TEST_KEYRING).decode_one(f.payload).data for f in found if f.encrypted
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
