# syntax=docker/dockerfile:1
# streamscore, CPU image:   docker build -t streamscore:0.1.0 .
# GPU image (CUDA, onnxruntime-gpu): Dockerfile.gpu.
#
# The container runs `streamscore run -c /etc/streamscore/config.yaml`: mount a config there
# (docker-compose.yml mounts deploy/config/streamscore.yaml; Kubernetes mounts a ConfigMap).
# The demo fraud model is installed at /opt/streamscore/models/fraud_model.onnx (it also ships
# inside the package, for `streamscore demo`).

# --- builder: a wheel of the project (pure Python, so it installs on any base) ----------------
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamscore ./streamscore
RUN pip wheel --no-deps --wheel-dir /dist .

# --- runtime ----------------------------------------------------------------------------------
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Non-root user `streamscore`, uid/gid 10001 (USER is numeric so that Kubernetes' runAsNonRoot
# can verify it without a runAsUser).
RUN groupadd --system --gid 10001 streamscore \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin streamscore

COPY --from=builder /dist /tmp/dist
RUN pip install /tmp/dist/*.whl && rm -rf /tmp/dist

COPY streamscore/demo/fraud_model.onnx /opt/streamscore/models/fraud_model.onnx

USER 10001:10001
WORKDIR /tmp
# metrics.port (/metrics, /healthz, /readyz); serve.port (REST: `serve`, `run --serve`)
EXPOSE 9100 8080

# Liveness of the scoring loop (metrics.port must stay 9100 for this check). /healthz answers
# once the model is loaded and the topics are checked, hence the start period.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=3)"]

ENTRYPOINT ["streamscore"]
CMD ["run", "-c", "/etc/streamscore/config.yaml"]
