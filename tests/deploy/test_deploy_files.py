"""Deployment files, checked offline (no Docker, no cluster): they parse; what the compose file
mounts and builds from exists; the configs they ship are valid streamscore configs that agree with
the images and the demo model; the probes and health checks hit paths the HTTP server serves.
test_compose.py, test_kubernetes_render.py and test_observability.py go further."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streamscore.config import Settings, load_settings
from streamscore.server import Health, HttpServer

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S_BASE = DEPLOY / "kubernetes" / "base"
K8S_OVERLAYS = DEPLOY / "kubernetes" / "overlays"
COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE_CONFIG = DEPLOY / "config" / "streamscore.yaml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "streamscore.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
DASHBOARD_PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "streamscore.yaml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
DEMO_CONFIG = REPO / "streamscore" / "demo" / "config.yaml"
DOCKERFILES = [REPO / "Dockerfile", REPO / "Dockerfile.gpu"]

CONFIG_IN_CONTAINER = "/etc/streamscore/config.yaml"
MODEL_IN_IMAGE = "/opt/streamscore/models/fraud_model.onnx"
IMAGE_UID = 10001

EXPECTED_FILES = [
    "Dockerfile",
    "Dockerfile.gpu",
    "docker-compose.yml",
    "deploy/config/streamscore.yaml",
    "deploy/prometheus/prometheus.yml",
    "deploy/prometheus/alerts.yml",
    "deploy/grafana/provisioning/datasources/prometheus.yaml",
    "deploy/grafana/provisioning/dashboards/streamscore.yaml",
    "deploy/grafana/dashboards/streamscore.json",
    "deploy/kubernetes/base/kustomization.yaml",
    "deploy/kubernetes/base/deployment.yaml",
    "deploy/kubernetes/base/configmap.yaml",
    "deploy/kubernetes/base/service.yaml",
    "deploy/kubernetes/base/pdb.yaml",
    "deploy/kubernetes/overlays/cpu/kustomization.yaml",
    "deploy/kubernetes/overlays/gpu/kustomization.yaml",
    "deploy/kubernetes/components/keda/kustomization.yaml",
    "deploy/kubernetes/components/hpa/kustomization.yaml",
    "deploy/kubernetes/components/prometheus-operator/kustomization.yaml",
    "docs/configuration.md",
]


# --- helpers ----------------------------------------------------------------------------------

def _yaml_files() -> list[Path]:
    return [COMPOSE_FILE, *sorted(DEPLOY.rglob("*.yaml")), *sorted(DEPLOY.rglob("*.yml"))]


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _compose() -> dict[str, Any]:
    return _load(COMPOSE_FILE)["services"]  # type: ignore[no-any-return]


def _deployment() -> dict[str, Any]:
    return _load(K8S_BASE / "deployment.yaml")  # type: ignore[no-any-return]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "streamscore")


def _gpu_overlay() -> dict[str, Any]:
    return _load(K8S_OVERLAYS / "gpu" / "kustomization.yaml")  # type: ignore[no-any-return]


def _gpu_container_patch() -> dict[str, Any]:
    (patch,) = [yaml.safe_load(p["patch"]) for p in _gpu_overlay()["patches"]
                if p["target"]["kind"] == "Deployment"]
    return _container(patch)


def _literal_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}


def _configmap_settings(tmp_path: Path, env: dict[str, str] | None = None) -> Settings:
    configmap = _load(K8S_BASE / "configmap.yaml")
    path = tmp_path / "config.yaml"
    path.write_text(configmap["data"]["config.yaml"])
    return load_settings(path, env=env or {})


def _dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, f"{path.name}: dangling line continuation"
    return instructions


def _args(instructions: list[tuple[str, str]], keyword: str) -> list[str]:
    return [rest for kw, rest in instructions if kw == keyword]


@pytest.fixture
def http_server() -> Iterator[int]:
    health = Health()
    health.ready = True
    server = HttpServer("127.0.0.1", 0, CollectorRegistry(), health)
    server.start()
    try:
        yield server.port
    finally:
        server.stop()


def _get_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


# --- all files --------------------------------------------------------------------------------

def test_expected_files_exist() -> None:
    missing = [name for name in EXPECTED_FILES if not (REPO / name).is_file()]
    assert not missing


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_yaml_file_parses(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents, f"{path} holds no YAML document"
    assert all(isinstance(d, dict) for d in documents), path


# --- images -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile(path: Path) -> None:
    instructions = _dockerfile(path)
    froms = _args(instructions, "FROM")
    assert len(froms) >= 2 and any(re.search(r"\bAS builder$", f, re.IGNORECASE) for f in froms), "multi-stage build"
    assert not re.search(r"\bAS\b", froms[-1], re.IGNORECASE), "the last stage is the runtime image"

    for source in (rest for kw, rest in instructions if kw == "COPY" and "--from=" not in rest):
        for item in source.split()[:-1]:
            assert list(REPO.glob(item)), f"{path.name}: COPY source {item} is missing"

    assert f"streamscore/demo/fraud_model.onnx {MODEL_IN_IMAGE}" in _args(instructions, "COPY")
    assert _args(instructions, "USER")[-1].split(":")[0] == str(IMAGE_UID)
    assert any(f"--uid {IMAGE_UID}" in run for run in _args(instructions, "RUN"))
    assert _args(instructions, "EXPOSE") == ["9100 8080"], "metrics.port and serve.port of the shipped configs"
    assert json.loads(_args(instructions, "ENTRYPOINT")[-1]) == ["streamscore"]
    assert json.loads(_args(instructions, "CMD")[-1]) == ["run", "-c", CONFIG_IN_CONTAINER]
    (healthcheck,) = _args(instructions, "HEALTHCHECK")
    assert "urllib.request" in healthcheck and "http://127.0.0.1:9100/healthz" in healthcheck


def test_cpu_and_gpu_images() -> None:
    cpu, gpu = (_dockerfile(p) for p in DOCKERFILES)
    assert _args(cpu, "FROM")[-1] == "python:3.11-slim"

    args = dict(a.split("=", 1) for a in _args(gpu, "ARG") if "=" in a)
    assert _args(gpu, "FROM")[-1] == "${CUDA_IMAGE}"
    assert re.fullmatch(r"nvidia/cuda:12\.[\d.]+-cudnn-runtime-ubuntu22\.04", args["CUDA_IMAGE"])
    gpu_runs = " ".join(_args(gpu, "RUN"))
    assert "python3.11" in gpu_runs
    install = gpu_runs.index("pip install /tmp/dist/")
    uninstall = gpu_runs.index("pip uninstall -y onnxruntime")
    install_gpu = gpu_runs.index('pip install "${ONNXRUNTIME_GPU}"')
    assert install < uninstall < install_gpu, "the GPU wheel must replace the CPU one, not precede it"
    assert args["ONNXRUNTIME_GPU"].strip('"').startswith("onnxruntime-gpu")


# --- docker compose ---------------------------------------------------------------------------

def test_compose_services() -> None:
    services = _compose()
    assert {"kafka", "topics", "streamscore", "loadgen", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"] == services["topics"]["image"]  # the version: test_compose.py
    assert "kafka-broker-api-versions.sh" in " ".join(services["kafka"]["healthcheck"]["test"])

    streamscore = services["streamscore"]
    assert streamscore["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "topics": {"condition": "service_completed_successfully"},
    }
    assert f"./{COMPOSE_CONFIG.relative_to(REPO)}:{CONFIG_IN_CONTAINER}:ro" in streamscore["volumes"]
    assert "9100:9100" in streamscore["ports"]
    assert "8080:8080" in streamscore["ports"], "REST (serve.port)"
    assert streamscore["command"] == ["run", "--serve", "-c", CONFIG_IN_CONTAINER]

    loadgen = services["loadgen"]
    assert loadgen["profiles"] == ["load"]
    command = " ".join(loadgen["entrypoint"] + loadgen["command"])
    assert command.startswith("python -m load.generate --bootstrap-servers kafka:9092 --topic transactions")
    assert "streamscore demo" not in command


def test_compose_mounts_and_builds_exist() -> None:
    for name, service in _compose().items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name}: mounts missing {source}"
        build = service.get("build")
        if build is not None:
            build = {"context": build} if isinstance(build, str) else build
            context = REPO / build.get("context", ".")
            assert context.is_dir(), f"{name}: build context {context} is missing"
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: Dockerfile is missing"


def test_compose_config_is_valid_and_matches_the_stack() -> None:
    settings = load_settings(COMPOSE_CONFIG, env={})
    demo = load_settings(DEMO_CONFIG, env={})
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.kafka.source_topics == ["transactions"]
    assert settings.kafka.destination_topic == "transaction-scores"
    assert settings.kafka.dead_letter_topic == "transactions-dlq"
    assert settings.single_model.path == Path(MODEL_IN_IMAGE)
    assert settings.metrics.port == 9100
    assert settings.serve.port == 8080  # the compose port mapping and the images' EXPOSE
    # The demo model was trained on the demo feature spec.
    assert settings.features == demo.features
    assert settings.decisions == demo.decisions
    assert settings.output == demo.output

    services = _compose()
    topics_command = " ".join(services["topics"]["command"])
    for topic in [*settings.kafka.source_topics, settings.kafka.destination_topic]:
        assert f"{topic}:4" in topics_command
    assert f"{settings.kafka.dead_letter_topic}:" in topics_command

    grace = services["streamscore"]["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > settings.stop_bound_s


# --- Prometheus and Grafana -------------------------------------------------------------------

def test_prometheus_scrapes_streamscore() -> None:
    settings = load_settings(COMPOSE_CONFIG, env={})
    targets = [t for job in _load(PROMETHEUS)["scrape_configs"] for sc in job.get("static_configs", [])
               for t in sc["targets"]]
    assert f"streamscore:{settings.metrics.port}" in targets
    assert "streamscore" in _compose()


def test_grafana_provisioning_matches_compose() -> None:
    grafana = _compose()["grafana"]
    (datasource,) = _load(DATASOURCES)["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    assert "9090:9090" in _compose()["prometheus"]["ports"]

    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    (provider,) = _load(DASHBOARD_PROVIDERS)["providers"]
    assert provider["options"]["path"] == mounts["./deploy/grafana/dashboards"]

    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]


# --- Kubernetes -------------------------------------------------------------------------------

@pytest.mark.parametrize("directory", [K8S_BASE, K8S_OVERLAYS / "cpu", K8S_OVERLAYS / "gpu"],
                         ids=lambda p: str(p.relative_to(DEPLOY)))
def test_kustomization_references_exist(directory: Path) -> None:
    kustomization = _load(directory / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    for resource in kustomization["resources"]:
        target = (directory / resource).resolve()
        assert target.is_file() or (target / "kustomization.yaml").is_file(), resource


def test_kubernetes_config_is_valid_and_matches_compose(tmp_path: Path) -> None:
    settings = _configmap_settings(tmp_path)
    compose = load_settings(COMPOSE_CONFIG, env={})
    assert settings.model == compose.model
    assert settings.single_model.path == Path(MODEL_IN_IMAGE)
    assert (settings.features, settings.decisions, settings.output) == (compose.features, compose.decisions,
                                                                          compose.output)

    deployment = _deployment()
    container = _container(deployment)
    assert container["args"] == ["run", "--serve", "-c", CONFIG_IN_CONTAINER]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(Path(CONFIG_IN_CONTAINER).parent))
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == _load(K8S_BASE / "configmap.yaml")["metadata"]["name"]
    assert {"key": "config.yaml", "path": Path(CONFIG_IN_CONTAINER).name} in volume["configMap"]["items"]

    # The environment overrides the manifests set are valid settings too.
    env = {**_literal_env(container), **_literal_env(_gpu_container_patch())}
    overridden = _configmap_settings(tmp_path, {k: v for k, v in env.items() if k.startswith("STREAMSCORE_")})
    assert overridden.single_model.provider == "cuda"


def test_kubernetes_deployment(tmp_path: Path) -> None:
    settings = _configmap_settings(tmp_path)
    deployment = _deployment()
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()

    assert pod["terminationGracePeriodSeconds"] > settings.stop_bound_s
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": settings.metrics.port, "rest": settings.serve.port}
    assert "--serve" in container["args"], "the rest port is served"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in ("metrics", settings.metrics.port), probe
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"

    service = _load(K8S_BASE / "service.yaml")
    assert service["spec"]["selector"].items() <= labels.items()
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        ("metrics", settings.metrics.port, "metrics"), ("rest", settings.serve.port, "rest")}
    pdb = _load(K8S_BASE / "pdb.yaml")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_probes_and_health_checks_hit_served_paths(http_server: int) -> None:
    deployment = _deployment()
    container = _container(deployment)
    paths = {container[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")}
    paths.add(deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"])
    for dockerfile in DOCKERFILES:
        (healthcheck,) = _args(_dockerfile(dockerfile), "HEALTHCHECK")
        paths.update(re.findall(r"http://127\.0\.0\.1:\d+(/[a-z]+)", healthcheck))
    for job in _load(PROMETHEUS)["scrape_configs"]:
        paths.add(job.get("metrics_path", "/metrics"))

    assert {"/healthz", "/readyz", "/metrics"} <= paths
    assert _get_status(http_server, "/no-such-path") == 404
    for path in sorted(paths):
        assert _get_status(http_server, path) == 200, path


def test_gpu_overlay() -> None:
    overlay = _gpu_overlay()
    (image,) = overlay["images"]
    assert image["name"] == "streamscore" and image["newTag"].endswith("-gpu")
    container = _gpu_container_patch()
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert _literal_env(container)["STREAMSCORE_MODEL__PROVIDER"] == "cuda"

    (cpu_image,) = _load(K8S_OVERLAYS / "cpu" / "kustomization.yaml")["images"]
    assert cpu_image["name"] == "streamscore" and not cpu_image["newTag"].endswith("-gpu")

