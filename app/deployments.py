"""Temporal Worker Deployments as operators see them: versions, the current one, drainage.

A build of the workers (ORDERFLOW_BUILD_ID) polls as a version of its deployment. New runs go
to the deployment's current version; a pinned run stays on the version it started on, so an
old version serves its runs until it has drained (docs/VERSIONING.md). These are the reads and
the one write (`promote`) behind `orderflow deploy …` (app/deploy_cli.py).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from temporalio.api.deployment.v1 import WorkerDeploymentInfo, WorkerDeploymentVersionInfo
from temporalio.api.deployment.v1 import WorkerDeploymentVersion as VersionProto
from temporalio.api.enums.v1 import VersionDrainageStatus, WorkerDeploymentVersionStatus
from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    DescribeWorkerDeploymentVersionRequest,
    ListWorkerDeploymentsRequest,
    SetWorkerDeploymentCurrentVersionRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from orderflow.contracts.deployment import DeploymentError, check_build_id, check_deployment_name
from orderflow.settings import Settings

log = logging.getLogger("orderflow")
RPC_TIMEOUT = timedelta(seconds=10)
IDENTITY = "orderflow deploy"
_STATUS = {  # WorkerDeploymentVersionStatus → the word operators read
    WorkerDeploymentVersionStatus.WORKER_DEPLOYMENT_VERSION_STATUS_INACTIVE: "inactive",
    WorkerDeploymentVersionStatus.WORKER_DEPLOYMENT_VERSION_STATUS_CURRENT: "current",
    WorkerDeploymentVersionStatus.WORKER_DEPLOYMENT_VERSION_STATUS_RAMPING: "ramping",
    WorkerDeploymentVersionStatus.WORKER_DEPLOYMENT_VERSION_STATUS_DRAINING: "draining",
    WorkerDeploymentVersionStatus.WORKER_DEPLOYMENT_VERSION_STATUS_DRAINED: "drained",
    WorkerDeploymentVersionStatus.WORKER_DEPLOYMENT_VERSION_STATUS_CREATED: "created",
}
_DRAINAGE = {
    VersionDrainageStatus.VERSION_DRAINAGE_STATUS_DRAINING: "draining",
    VersionDrainageStatus.VERSION_DRAINAGE_STATUS_DRAINED: "drained",
}


@dataclass(frozen=True)
class VersionState:
    """One build of a deployment, as the server tracks it."""

    build_id: str
    status: str  # current, ramping, draining, drained, inactive (never current), created
    drainage: str  # draining, drained, or "" (not tracked: never left current or ramping)
    created: datetime | None
    current_since: datetime | None
    drainage_checked: datetime | None


@dataclass(frozen=True)
class DeploymentState:
    """One Worker Deployment: where new runs go, and every version it has seen poll."""

    name: str
    current: str  # the current build id; "" = unversioned workers take new runs
    ramping: str  # a build taking `ramp_percentage` of new runs, or ""
    ramp_percentage: float
    versions: list[VersionState] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for --json."""
        return asdict(self)


@dataclass(frozen=True)
class Promotion:
    """What `promote` changed."""

    deployment: str
    current: str
    previous: str  # "" when unversioned workers took new runs before
    changed: bool  # False when the build was current already


@dataclass(frozen=True)
class Drainage:
    """Whether a build may be stopped: no open pinned run is left on it."""

    deployment: str
    build_id: str
    status: str
    drained: bool  # the server says so (it counts open pinned runs every few minutes)
    open_pinned: int  # open pinned runs on it now, counted in visibility (eventually consistent)
    query: str  # that count's visibility query, for the Temporal UI or `temporal workflow list`
    drainage_checked: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for --json."""
        return asdict(self)


def _time(stamp: Timestamp) -> datetime | None:
    return stamp.ToDatetime().replace(microsecond=0) if stamp.seconds else None


def _not_found(err: RPCError) -> bool:
    return err.status == RPCStatusCode.NOT_FOUND


def _no_deployment(client: Client, name: str) -> DeploymentError:
    return DeploymentError(
        f"no worker deployment {name!r} in namespace {client.namespace!r}: no worker started"
        " with a build id (ORDERFLOW_BUILD_ID) has polled under that name"
        " (ORDERFLOW_DEPLOYMENT_NAME) yet"
    )


async def list_deployments(client: Client) -> list[str]:
    """The names of every Worker Deployment in the client's namespace."""
    names: list[str] = []
    token = b""
    while True:
        page = await client.workflow_service.list_worker_deployments(
            ListWorkerDeploymentsRequest(namespace=client.namespace, next_page_token=token),
            timeout=RPC_TIMEOUT,
        )
        names += [d.name for d in page.worker_deployments]
        if not (token := page.next_page_token):
            return sorted(names)


def _version_state(summary: WorkerDeploymentInfo.WorkerDeploymentVersionSummary) -> VersionState:
    return VersionState(
        build_id=summary.deployment_version.build_id,
        status=_STATUS.get(summary.status, "unknown"),
        drainage=_DRAINAGE.get(summary.drainage_info.status, ""),
        created=_time(summary.create_time),
        current_since=_time(summary.current_since_time),
        drainage_checked=_time(summary.drainage_info.last_checked_time),
    )


async def _describe(client: Client, name: str) -> tuple[DeploymentState, bytes]:
    check_deployment_name(name)
    try:
        answer = await client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(namespace=client.namespace, deployment_name=name),
            timeout=RPC_TIMEOUT,
        )
    except RPCError as err:
        if _not_found(err):
            raise _no_deployment(client, name) from err
        raise DeploymentError(
            f"deployment {name!r}: Temporal did not answer: {err.message}"
        ) from err
    info = answer.worker_deployment_info
    routing = info.routing_config
    versions = sorted(
        (_version_state(s) for s in info.version_summaries),
        key=lambda v: v.created or datetime.min,
        reverse=True,
    )
    state = DeploymentState(
        name=info.name,
        current=routing.current_deployment_version.build_id,
        ramping=routing.ramping_deployment_version.build_id,
        ramp_percentage=round(routing.ramping_version_percentage, 2),
        versions=versions,
    )
    return state, answer.conflict_token


async def describe_deployment(client: Client, name: str) -> DeploymentState:
    """One deployment's routing and versions, newest first."""
    return (await _describe(client, name))[0]


async def promote(client: Client, name: str, build_id: str) -> Promotion:
    """Make `build_id` the deployment's current version: new runs (and auto-upgrade ones) go there.

    Refused by the server while the build has no workers polling, or when they do not poll every
    task queue the current version does (a missing worker); the error names the build.
    """
    check_build_id(build_id)
    state, token = await _describe(client, name)
    known = [v.build_id for v in state.versions]
    if build_id not in known:
        raise DeploymentError(
            f"build {build_id!r} has no workers in deployment {name!r} yet (versions:"
            f" {', '.join(known) or 'none'}): start them with ORDERFLOW_BUILD_ID={build_id}"
            " and promote once `orderflow deploy status` lists it"
        )
    if state.current == build_id:
        return Promotion(name, build_id, build_id, changed=False)
    try:
        await client.workflow_service.set_worker_deployment_current_version(
            SetWorkerDeploymentCurrentVersionRequest(
                namespace=client.namespace,
                deployment_name=name,
                build_id=build_id,
                conflict_token=token,
                identity=IDENTITY,
            ),
            timeout=RPC_TIMEOUT,
        )
    except RPCError as err:
        raise DeploymentError(
            f"build {build_id!r} of deployment {name!r} was not made current: {err.message}"
        ) from err
    return Promotion(name, build_id, state.current, changed=True)


def open_pinned_query(name: str, build_id: str) -> str:
    """The visibility query of the open runs pinned to one version (what drainage counts)."""
    return (
        f"TemporalWorkerDeploymentVersion = '{name}:{build_id}'"
        " AND TemporalWorkflowVersioningBehavior = 'Pinned' AND ExecutionStatus = 'Running'"
    )


async def _version_info(client: Client, name: str, build_id: str) -> WorkerDeploymentVersionInfo:
    try:
        answer = await client.workflow_service.describe_worker_deployment_version(
            DescribeWorkerDeploymentVersionRequest(
                namespace=client.namespace,
                deployment_version=VersionProto(deployment_name=name, build_id=build_id),
            ),
            timeout=RPC_TIMEOUT,
        )
    except RPCError as err:
        if not _not_found(err):
            raise DeploymentError(
                f"build {build_id!r} of deployment {name!r}: Temporal did not answer: {err.message}"
            ) from err
        known = [v.build_id for v in (await describe_deployment(client, name)).versions]
        raise DeploymentError(
            f"build {build_id!r} is not a version of deployment {name!r}"
            f" (versions: {', '.join(known) or 'none'})"
        ) from err
    return answer.worker_deployment_version_info


async def polled_task_queues(client: Client, name: str, build_id: str) -> list[str]:
    """The task queues a version's workers have polled (each kind once), sorted."""
    check_build_id(build_id)
    info = await _version_info(client, name, build_id)
    return sorted({q.name for q in info.task_queue_infos})


async def drainage(client: Client, name: str, build_id: str) -> Drainage:
    """Whether `build_id` has drained: no longer current or ramping, no open pinned run left."""
    check_deployment_name(name)
    check_build_id(build_id)
    info = await _version_info(client, name, build_id)
    query = open_pinned_query(name, build_id)
    try:
        count = (await client.count_workflows(query, rpc_timeout=RPC_TIMEOUT)).count
    except RPCError as err:
        raise DeploymentError(
            f"build {build_id!r}: counting its open pinned runs failed: {err.message}"
        ) from err
    drained = info.drainage_info.status == VersionDrainageStatus.VERSION_DRAINAGE_STATUS_DRAINED
    return Drainage(
        deployment=name,
        build_id=build_id,
        status=_STATUS.get(info.status, "unknown"),
        drained=drained,
        open_pinned=count,
        query=query,
        drainage_checked=_time(info.drainage_info.last_checked_time),
    )


async def log_routing(client: Client, settings: Settings) -> None:
    """At start: say whether this build takes new runs, and how to make it (never fails a start)."""
    name, build = settings.deployment_name, settings.build_id
    promote_hint = f"`orderflow deploy promote {build}`"
    try:
        state = await describe_deployment(client, name)
    except DeploymentError:  # a first start: the deployment appears as the workers poll
        state = DeploymentState(name, current="", ramping="", ramp_percentage=0.0)
    except RPCError as err:  # pragma: no cover - the server went away between connect and here
        log.warning("deployment %s: could not read its routing: %s", name, err.message)
        return
    if state.current == build:
        log.info("build %s is the current version of deployment %s", build, name)
    elif not state.current:
        log.warning(
            "deployment %s has no current version: new runs go to unversioned workers, or wait"
            " if none is left; %s sends them to build %s",
            name,
            promote_hint,
            build,
        )
    else:
        log.info(
            "build %s of deployment %s serves only runs pinned to it; current is %s (%s)",
            build,
            name,
            state.current,
            promote_hint,
        )
