# streamscore: multi-stage build, slim non-root runtime. GPU variant: Dockerfile.gpu (issue 5).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamscore ./streamscore
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --uid 10001 --create-home streamscore
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER streamscore
EXPOSE 9100
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=2)"
ENTRYPOINT ["streamscore"]
CMD ["run", "-c", "/etc/streamscore/config.yaml"]
