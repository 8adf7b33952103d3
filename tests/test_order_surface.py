"""OrderWorkflow's names as running orders and clients know them: split across modules, kept."""

from __future__ import annotations

from temporalio.workflow import _Definition

from workflows.order import OrderWorkflow


def test_the_workflow_keeps_its_name_and_handlers() -> None:
    defn = _Definition.must_from_class(OrderWorkflow)
    assert defn.name == "OrderWorkflow"
    assert set(defn.signals) == {"payment_received", "payment_failed", "cancel", "shipped"}
    assert set(defn.queries) == {"status"}
    assert set(defn.updates) == {"pay", "placed"}  # placed: checkout in one call (issue 20)
