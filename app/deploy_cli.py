"""`orderflow deploy …`: the worker deployments' versions, promoting a build, and its drainage.

A build of the workers (ORDERFLOW_BUILD_ID) is a version of its deployment
(ORDERFLOW_DEPLOYMENT_NAME, default orderflow). New orders go to the current version; an order
stays pinned to the build it started on, so the old build keeps running until `drained` says
it may stop (docs/VERSIONING.md, the README's "Deploying a new version").
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli_support import connect_or_explain
from app.cli_support import run_command as _run
from orderflow.errors import OrderflowError

if TYPE_CHECKING:  # imported when a command runs, so `--help` stays light
    from app.deployments import DeploymentState, Drainage

deploy_app = typer.Typer(
    help="Worker deployments: versions and drainage (status), the current build (promote),"
    " whether an old build may stop (drained).",
    no_args_is_help=True,
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
BuildArg = Annotated[str, typer.Argument(help="The build id (ORDERFLOW_BUILD_ID of its workers)")]
DeploymentOpt = Annotated[
    str,
    typer.Option("--deployment", help="The deployment's name (default: ORDERFLOW_DEPLOYMENT_NAME)"),
]
VERSION_COLUMNS = ["build_id", "status", "drainage", "created", "current_since"]
VERSION_COLUMNS += ["drainage_checked"]
NOT_DRAINED_EXIT = 1  # `drained`: 0 drained, 1 not yet, 2 could not tell (as grep's codes)
ERROR_EXIT = 2


def _emit(data: Any, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def _deployment_text(state: DeploymentState) -> str:
    from app.queues_cli import table

    ramp = f"{state.ramping} at {state.ramp_percentage:g}%" if state.ramping else "none"
    head = (
        f"deployment {state.name}: current {state.current or '(unversioned workers)'},"
        f" ramping {ramp}"
    )
    rows = [v.__dict__ for v in state.versions]
    return head + "\n" + (table(rows, VERSION_COLUMNS) if rows else "(no versions)")


@deploy_app.command("status")
@_run
async def status(deployment: DeploymentOpt = "", as_json: JsonOpt = False) -> None:
    """Every deployment (or one): its current and ramping build, each version's drainage."""
    from app.deployments import describe_deployment, list_deployments
    from orderflow.settings import Settings

    settings = Settings.from_env()
    client = await connect_or_explain(settings)
    names = [deployment] if deployment else await list_deployments(client)
    states = [await describe_deployment(client, name) for name in names]
    here = {"deployment": settings.deployment_name, "build_id": settings.build_id}
    if as_json:
        _emit({"configured": here, "deployments": [s.to_dict() for s in states]}, True, "")
        return
    build = settings.build_id or "none (ORDERFLOW_BUILD_ID unset: unversioned workers)"
    lines = [f"configured here: deployment {settings.deployment_name}, build {build}"]
    if not states:
        lines.append(f"no worker deployments in namespace {client.namespace!r}")
    typer.echo("\n\n".join(lines + [_deployment_text(s) for s in states]))


@deploy_app.command("promote")
@_run
async def promote(
    build_id: BuildArg, deployment: DeploymentOpt = "", as_json: JsonOpt = False
) -> None:
    """Make BUILD the current version: new orders (and auto-upgrade runs) go to it."""
    from app.deployments import promote as make_current
    from orderflow.settings import Settings

    settings = Settings.from_env()
    name = deployment or settings.deployment_name
    client = await connect_or_explain(settings)
    done = await make_current(client, name, build_id)
    if not done.changed:
        text = f"build {build_id} is already the current version of deployment {name}"
    else:
        before = done.previous or "unversioned workers"
        text = f"build {build_id} is now the current version of deployment {name} (was {before})"
        if done.previous:
            text += (
                f"\nbuild {done.previous} keeps its pinned runs until they end:"
                f" `orderflow deploy drained {done.previous}` says when it may stop"
            )
    _emit(done.__dict__, as_json, text)


def _drainage_text(d: Drainage) -> str:
    if d.drained:
        return (
            f"build {d.build_id} of deployment {d.deployment} has drained: no open pinned run"
            " is left on it; its workers may stop (a query of a closed run still needs one)"
        )
    if d.status in ("current", "ramping"):
        why = f"it is the {d.status} version: new runs still go to it"
    elif d.status in ("inactive", "created"):
        why = "it was never current or ramping, so the server does not track its drainage"
    elif d.open_pinned:
        why = f"{d.open_pinned} open pinned run(s) are on it ({d.query})"
    else:
        checked = d.drainage_checked.isoformat() if d.drainage_checked else "not yet"
        why = (
            "no open pinned run is counted now; the server confirms at its next drainage check"
            f" (last: {checked})"
        )
    return f"build {d.build_id} of deployment {d.deployment} has not drained: {why}"


async def _drainage(build_id: str, deployment: str) -> Drainage:
    from app.deployments import drainage
    from orderflow.settings import Settings

    settings = Settings.from_env()
    client = await connect_or_explain(settings)
    return await drainage(client, deployment or settings.deployment_name, build_id)


@deploy_app.command("drained")
def drained(build_id: BuildArg, deployment: DeploymentOpt = "", as_json: JsonOpt = False) -> None:
    """Whether BUILD has drained (exit 0), not yet (exit 1), or could not tell (exit 2)."""
    try:
        result = asyncio.run(_drainage(build_id, deployment))
    except OrderflowError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(ERROR_EXIT) from err
    _emit(result.to_dict(), as_json, _drainage_text(result))
    if not result.drained:
        raise typer.Exit(NOT_DRAINED_EXIT)
