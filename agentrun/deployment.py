"""Worker Versioning: every worker is a version (deployment name + build id) of one Worker
Deployment, and every run is pinned to the version it started on, so a new build never replays
a run that an older build began (README "Upgrading workers").

A new version receives new runs once it is the deployment's *current* version. The embedded
default makes its own version current (AGENTRUN_SET_CURRENT_VERSION=auto with a local Temporal);
on a shared cluster an operator does it once the new build is healthy:

    temporal worker deployment set-current-version --deployment-name agentrun --build-id B
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from importlib import metadata
from pathlib import Path

from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    SetWorkerDeploymentCurrentVersionRequest,
)
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import WorkerDeploymentConfig

from agentrun.settings import Settings
from agentrun.stack import is_local

__all__ = [
    "current_build_id",
    "default_build_id",
    "deployment_config",
    "deployment_version",
    "make_version_current",
    "promote_on_start",
]

log = logging.getLogger("agentrun.deployment")

_ROOT = Path(__file__).resolve().parent.parent


def _workflow_side_sources() -> list[Path]:
    # What a replay depends on: the workflow code and the contracts and protocol it imports.
    # Activity-only changes keep the build id, so they roll out without pinning runs to a
    # build that must be kept running.
    files = sorted((_ROOT / "workflows").rglob("*.py"))
    for name in ("contracts", "protocol"):
        package = _ROOT / "agentrun" / name
        files += sorted(package.rglob("*.py")) if package.is_dir() else []
    files.append(_ROOT / "agentrun" / "text.py")  # the contracts' text checks
    return [f for f in files if f.is_file()]


def default_build_id() -> str:
    """The package version and a hash of the workflow-side source: "0.1.0-3f2a9c1b7d4e"."""
    try:
        version = metadata.version("agentrun")
    except metadata.PackageNotFoundError:
        version = "0"
    digest = hashlib.sha256()
    for path in _workflow_side_sources():
        digest.update(path.relative_to(_ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return f"{version}-{digest.hexdigest()[:12]}"


def deployment_version(settings: Settings) -> WorkerDeploymentVersion:
    return WorkerDeploymentVersion(
        deployment_name=settings.deployment_name,
        build_id=settings.build_id or default_build_id(),
    )


def deployment_config(settings: Settings) -> WorkerDeploymentConfig | None:
    """The worker's deployment options, or None for an unversioned worker
    (AGENTRUN_WORKER_VERSIONING=false)."""
    if not settings.worker_versioning:
        return None
    return WorkerDeploymentConfig(
        version=deployment_version(settings),
        use_worker_versioning=True,
        default_versioning_behavior=VersioningBehavior.PINNED,
    )


async def current_build_id(client: Client, deployment_name: str) -> str | None:
    """The build id of the deployment's current version; None when it has none (or no such
    deployment yet)."""
    try:
        resp = await client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(
                namespace=client.namespace, deployment_name=deployment_name
            )
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    current = resp.worker_deployment_info.routing_config.current_deployment_version
    return current.build_id or None


async def make_version_current(
    client: Client,
    version: WorkerDeploymentVersion,
    *,
    timeout: float = 60,
    ignore_missing_task_queues: bool = False,
) -> bool:
    """Make `version` its deployment's current version, waiting (bounded) until the server has
    seen a worker of that version poll. False when it already was current."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            resp = await client.workflow_service.describe_worker_deployment(
                DescribeWorkerDeploymentRequest(
                    namespace=client.namespace, deployment_name=version.deployment_name
                )
            )
            info = resp.worker_deployment_info
            if info.routing_config.current_deployment_version.build_id == version.build_id:
                return False
            known = {s.deployment_version.build_id for s in info.version_summaries}
            if version.build_id in known:
                await client.workflow_service.set_worker_deployment_current_version(
                    SetWorkerDeploymentCurrentVersionRequest(
                        namespace=client.namespace,
                        deployment_name=version.deployment_name,
                        build_id=version.build_id,
                        conflict_token=resp.conflict_token,
                        identity=client.identity,
                        ignore_missing_task_queues=ignore_missing_task_queues,
                    )
                )
                return True
        except RPCError as exc:
            # NOT_FOUND: no worker of the deployment has polled yet. FAILED_PRECONDITION /
            # ABORTED: the version is still registering or another change raced this one.
            if exc.status not in (
                RPCStatusCode.NOT_FOUND,
                RPCStatusCode.FAILED_PRECONDITION,
                RPCStatusCode.ABORTED,
            ):
                raise
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"worker deployment version {version.to_canonical_string()} was not registered "
                f"within {timeout:.0f}s: is a worker of that build polling?"
            )
        await asyncio.sleep(0.2)


async def promote_on_start(client: Client, settings: Settings) -> None:
    """Apply AGENTRUN_SET_CURRENT_VERSION once this process's worker polls.

    always: make this version current. never: leave routing to the operator. auto: always
    with a Temporal server on this machine (the embedded default: `agentrun dev`, `demo`,
    `worker`), and on a shared cluster only when the deployment has no current version yet
    (its first deploy); otherwise log the command that completes the rollout.
    """
    if not settings.worker_versioning or settings.set_current_version == "never":
        return
    version = deployment_version(settings)
    local = is_local(settings.temporal_host_port[0])
    mode = settings.set_current_version
    try:
        if mode == "auto" and not local:
            current = await current_build_id(client, version.deployment_name)
            if current is not None and current != version.build_id:
                log.warning(
                    "worker deployment %r: build %r is current; this worker (build %r) serves "
                    "only runs pinned to it until an operator makes it current: %s",
                    version.deployment_name,
                    current,
                    version.build_id,
                    _set_current_command(version),
                )
                return
        # A local stack's earlier build may have polled another task queue; do not let that
        # block a developer's restart.
        if await make_version_current(client, version, ignore_missing_task_queues=local):
            log.info("worker deployment version %s is now current", version.to_canonical_string())
    except (RPCError, TimeoutError) as exc:
        if local or mode == "always":
            raise
        # A shared cluster may not let workers change routing (a Cloud API key without that
        # permission, say): keep serving, and say what completes the rollout.
        log.warning(
            "could not make build %r of worker deployment %r current (%s); run: %s",
            version.build_id,
            version.deployment_name,
            exc,
            _set_current_command(version),
        )


def _set_current_command(version: WorkerDeploymentVersion) -> str:
    return (
        "temporal worker deployment set-current-version "
        f"--deployment-name {version.deployment_name} --build-id {version.build_id}"
    )
