"""Deployment files, checked offline: they parse, what they mount exists, configs are valid."""

from __future__ import annotations

from pathlib import Path

import yaml

from streamscore.config import load_settings

REPO = Path(__file__).resolve().parents[2]


def test_every_yaml_file_parses() -> None:
    files = [REPO / "docker-compose.yml", *REPO.glob("deploy/**/*.yaml"), *REPO.glob("deploy/**/*.yml")]
    assert len(files) >= 6
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path


def test_compose_mounts_and_builds_exist_and_config_is_valid() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "topics", "streamscore", "prometheus"} <= set(services)
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert (REPO / source).exists(), source
        build = service.get("build")
        if isinstance(build, str):
            assert (REPO / build / "Dockerfile").is_file()
    settings = load_settings(REPO / "deploy" / "kubernetes" / "base" / "streamscore.yaml", env={})
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.model.path.name == "fraud_model.onnx"


def test_kubernetes_probes_use_the_served_paths() -> None:
    deployment = yaml.safe_load((REPO / "deploy/kubernetes/base/deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 30
    kustomization = yaml.safe_load((REPO / "deploy/kubernetes/base/kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (REPO / "deploy/kubernetes/base" / resource).is_file()
    for generator in kustomization["configMapGenerator"]:
        for entry in generator["files"]:
            assert (REPO / "deploy/kubernetes/base" / entry.split("=", 1)[1]).resolve().is_file()
