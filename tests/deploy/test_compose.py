"""docker-compose.yml against the Compose Specification's JSON schema (the copy check-jsonschema
ships, as `docker compose config` would check it without an engine), plus the cross-references
the schema cannot see: services that depend on one another exist and are active in the same
profiles, and the files the services mount or read exist."""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _errors(document: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in _validator().iter_errors(document)]


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # type: ignore[no-any-return]


def _depends_on(service: dict[str, Any]) -> list[str]:
    deps = service.get("depends_on", [])
    return list(deps) if isinstance(deps, dict | list) else []


def test_compose_file_matches_the_compose_specification() -> None:
    assert _errors(_compose()) == []


@pytest.mark.parametrize("mutation", ["unknown key", "wrong type", "bad condition", "bad service name"])
def test_schema_rejects_broken_compose_files(mutation: str) -> None:
    broken = copy.deepcopy(_compose())
    services = broken["services"]
    if mutation == "unknown key":
        services["streamscore"]["depend_on"] = services["streamscore"].pop("depends_on")
    elif mutation == "wrong type":
        services["streamscore"]["ports"] = 9100
    elif mutation == "bad condition":
        services["streamscore"]["depends_on"]["kafka"]["condition"] = "healthy"
    else:
        services["stream score"] = services.pop("streamscore")
    assert _errors(broken)


def test_dependencies_exist_and_share_profiles() -> None:
    """`docker compose up` refuses a dependency on a service that is missing or only in a profile
    the dependent service is not in."""
    services = _compose()["services"]
    for name, service in services.items():
        profiles = set(service.get("profiles", []))
        for dependency in _depends_on(service):
            assert dependency in services, f"{name} depends on undefined {dependency}"
            needed = set(services[dependency].get("profiles", []))
            assert not needed or needed & profiles, f"{name} depends on {dependency}, active only in {needed}"


def test_every_host_path_exists() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":", 1)[0]
            assert source.startswith("./"), f"{name}: {source} is not a bind mount of a repository path"
            assert (REPO / source).exists(), f"{name}: mounts missing {source}"
        for env_file in service.get("env_file", []):
            assert (REPO / env_file).is_file(), f"{name}: missing env_file {env_file}"


def test_grafana_reads_the_mounted_provisioning() -> None:
    """The dashboard provider's path and the home dashboard lie inside what compose mounts."""
    grafana = _compose()["services"]["grafana"]
    mounts = {target: REPO / source for source, target, *_ in (v.split(":") for v in grafana["volumes"])}

    def host_path(container_path: str) -> Path:
        target = next(t for t in mounts if container_path == t or container_path.startswith(t + "/"))
        return mounts[target] / Path(container_path).relative_to(target)

    assert host_path("/etc/grafana/provisioning/datasources").is_dir()
    providers = host_path("/etc/grafana/provisioning/dashboards")
    for provider_file in providers.glob("*.yaml"):
        for provider in yaml.safe_load(provider_file.read_text())["providers"]:
            assert list(host_path(provider["options"]["path"]).glob("*.json")), provider["name"]
    assert host_path(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]).is_file()


KAFKA_SH = REPO / "scripts" / "kafka.sh"
PER_HOST = {"listeners", "advertised.listeners", "listener.security.protocol.map", "controller.quorum.voters",
            "log.dirs", "num.partitions"}
"""Broker settings that differ between the compose network and a test's 127.0.0.1 node by design
(``num.partitions`` only shapes auto-created topics, which compose turns off)."""


def _kafka_sh_properties() -> dict[str, str]:
    """The server.properties that scripts/kafka.sh writes (its heredoc), placeholders and all."""
    text = KAFKA_SH.read_text()
    body = text.split('server.properties" <<EOF\n', 1)[1].split("\nEOF\n", 1)[0]
    pairs = (line.split("=", 1) for line in body.splitlines() if "=" in line and not line.startswith("#"))
    return {key: value for key, value in pairs}  # noqa: C416 - a 2-item list per line, not a pair type


def test_compose_kafka_is_the_version_and_settings_of_kafka_sh() -> None:
    version = re.search(r"<kafka.version>(.+)</kafka.version>", (REPO / "scripts/kafka-pom/pom.xml").read_text())
    assert version is not None
    services = _compose()["services"]
    assert {services[name]["image"] for name in ("kafka", "topics")} == {f"apache/kafka:{version.group(1)}"}
    environment = services["kafka"]["environment"]
    for key, value in _kafka_sh_properties().items():
        if key not in PER_HOST:
            assert environment.get("KAFKA_" + key.upper().replace(".", "_")) == value, key
    heap = re.search(r"java (-Xms\S+ -Xmx\S+)", KAFKA_SH.read_text())
    assert heap is not None and environment["KAFKA_HEAP_OPTS"] == heap.group(1)
