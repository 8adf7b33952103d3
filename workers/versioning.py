"""The workflow runner of versioned workers: each run declares its type's versioning behavior.

A versioned worker (a build id is set) reports each workflow task with the behavior of its
workflow type, from `workflows/versioning.py`. The behavior cannot sit on `@workflow.defn`:
an unversioned worker would then report it too, and the server refuses that. So the classes
declare none, and this runner gives each run's definition its behavior as the run is created.

The sandbox re-imports this module for every run (`SandboxedWorkflowRunner(runner_class=...)`):
it imports nothing but temporalio and the table.
"""

from __future__ import annotations

import dataclasses

from temporalio.worker import UnsandboxedWorkflowRunner, WorkflowInstance, WorkflowInstanceDetails

from workflows.versioning import DEFAULT_BEHAVIOR, VERSIONING_BEHAVIORS


class VersionedWorkflowRunner(UnsandboxedWorkflowRunner):
    """Runs workflow code as UnsandboxedWorkflowRunner does, with its type's behavior set."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        """The run, its definition carrying the behavior of `workflows/versioning.py`."""
        behavior = VERSIONING_BEHAVIORS.get(det.defn.name or "", DEFAULT_BEHAVIOR)
        defn = dataclasses.replace(det.defn, versioning_behavior=behavior)
        return super().create_instance(dataclasses.replace(det, defn=defn))
