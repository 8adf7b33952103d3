"""Worker deployments: the names a build of the workers registers under (docs/VERSIONING.md).

A worker started with a build id (ORDERFLOW_BUILD_ID) polls as the version
`<deployment name>.<build id>` of its Worker Deployment, and each workflow type declares on its
`@workflow.defn` whether its runs stay on the build they started on (PINNED) or move to the
current build at their next task (AUTO_UPGRADE). Without a build id the workers are unversioned,
as the SDK's default: every worker takes every task, and `workflow.patched` is the only guard.
"""

from __future__ import annotations

import re

from orderflow.errors import OrderflowError

DEFAULT_DEPLOYMENT_NAME = "orderflow"
# Temporal joins the two with a "." (the version's canonical string), so a deployment name has
# none; a build id is an image tag or a git sha: Docker's tag alphabet, at most 128 characters
# (Temporal allows 255)
DEPLOYMENT_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
BUILD_ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
BUILD_ID_RULE = "letters, digits and _ . + - (an image tag or git sha), at most 128 characters"
DEPLOYMENT_NAME_RULE = "letters, digits, _ and - (no dot), at most 100 characters"


class DeploymentError(OrderflowError):
    """A deployment or build id that is malformed, unknown, or not in the state asked for."""


def check_build_id(build_id: str) -> str:
    """`build_id` if it is one, else a DeploymentError naming it (escaped)."""
    if not BUILD_ID_PATTERN.fullmatch(build_id):
        raise DeploymentError(f"build id {build_id[:140]!r} is not valid: use {BUILD_ID_RULE}")
    return build_id


def check_deployment_name(name: str) -> str:
    """`name` if it is a deployment name, else a DeploymentError naming it (escaped)."""
    if not DEPLOYMENT_NAME_PATTERN.fullmatch(name):
        raise DeploymentError(
            f"deployment name {name[:120]!r} is not valid: use {DEPLOYMENT_NAME_RULE}"
        )
    return name
