# The flowrun-operator image: the Python package and its dependencies on a slim Python base, run as a
# non-root user (uid/gid 10001, as the Helm chart's securityContext expects).
#
#   docker build -t flowrun-operator:dev .
#
# Pinned by tag; pin by digest (python:3.11-slim-bookworm@sha256:...) in your own builds for reproducibility.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
# A virtualenv, so the runtime stage copies exactly the installed packages and nothing of the build.
RUN python -m venv /opt/flowrun \
    && /opt/flowrun/bin/pip install --no-cache-dir .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="flowrun-operator" \
      org.opencontainers.image.description="Kopf operator for FlowRun and ConcurrencyLimit (flowrun.io/v1alpha1)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/flowrun/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 flowrun \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin flowrun
COPY --from=build /opt/flowrun /opt/flowrun
USER 10001:10001
WORKDIR /tmp
# Kopf's health endpoint when started with --liveness=http://0.0.0.0:8080/healthz (the chart does).
EXPOSE 8080
ENTRYPOINT ["flowrun-operator"]
