"""The benchmarks' baseline workflow: one workflow task, no activities."""

from __future__ import annotations

from temporalio import workflow


@workflow.defn
class NoopWorkflow:
    """Returns at once."""

    @workflow.run
    async def run(self) -> None:
        """Nothing to do."""
