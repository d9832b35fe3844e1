"""deploy/: the manifests parse, and every comsa-migrate command they run is one the CLI
accepts, with its options; the image runs the tool as the pod's non-root user."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from comsa_migrate.cli import main

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
MANIFESTS = sorted(DEPLOY.rglob("*.yaml"))


def _documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def _pod_specs() -> list[dict[str, Any]]:
    return [doc["spec"]["template"]["spec"] for doc in _documents() if doc["kind"] == "Deployment"]


def _tool_containers() -> list[dict[str, Any]]:
    """Every container (init or not) that runs the comsa-migrate image."""
    return [
        container
        for spec in _pod_specs()
        for container in (*spec.get("initContainers", ()), *spec["containers"])
        if "comsa-migrate" in container["image"]
    ]


def _invocations() -> list[list[str]]:
    return [[str(arg) for arg in container["args"]] for container in _tool_containers()]


def test_every_manifest_parses_as_kubernetes_objects() -> None:
    documents = _documents()

    assert MANIFESTS and documents
    assert all({"apiVersion", "kind", "metadata"} <= doc.keys() for doc in documents)


def test_the_pod_restores_before_the_dashboard_starts_and_syncs_beside_it() -> None:
    (spec,) = _pod_specs()
    init, sidecar = spec["initContainers"]  # in this order: restore, then the sidecar

    assert init["args"][0] == "restore" and "restartPolicy" not in init
    # a native sidecar: started before the dashboard, stopped after it
    assert sidecar["args"][0] == "sync" and sidecar["restartPolicy"] == "Always"
    assert not [c for c in spec["containers"] if "comsa-migrate" in c["image"]]
    (deployment,) = [doc for doc in _documents() if doc["kind"] == "Deployment"]
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    volume = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    for container in spec["initContainers"] + spec["containers"]:
        mounts = {(m["name"], m["mountPath"]) for m in container["volumeMounts"]}
        assert {(name, "/app/data") for name in volume} == mounts  # the data folder, shared
        secrets = {e["secretRef"]["name"] for e in container.get("envFrom", ())}
        assert "comsa-db-credentials" in secrets
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("args", _invocations(), ids=lambda args: args[0])
def test_every_command_and_option_the_manifests_use_is_accepted(args: list[str]) -> None:
    name, rest = args[0], args[1:]
    ctx = main.make_context("comsa-migrate", [name, *rest], resilient_parsing=True)
    command = main.get_command(ctx, name)
    assert command is not None, f"comsa-migrate has no command {name!r}"

    # as a child of the group's context, as when run: so the command's help option (which
    # click makes once per command) has the group's names, -h too
    parsed = command.make_context(name, list(rest), parent=ctx)  # raises for an unknown option

    assert parsed.params


def test_the_image_runs_the_tool_as_the_pods_user() -> None:
    text = (DEPLOY / "Containerfile").read_text()

    assert "pip install ." in text
    assert "USER 1000" in text
    assert 'ENTRYPOINT ["comsa-migrate"]' in text
