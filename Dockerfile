# The hub's image: `hub worker`, `hub api` and `hub db migrate` (the helm chart runs all three).
#   docker build -t commerce-hub:0.1.0 .
#   docker run --rm -e HUB_DATABASE_URL=postgresql://... commerce-hub:0.1.0 db migrate
# The workflows, subscribers, connectors and API routes of this repository are baked in.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY hub hub
COPY workflows workflows
COPY subscribers subscribers
COPY connectors connectors
COPY api api
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HUB_DATA_DIR=/tmp/hub
RUN groupadd --gid 10001 hub \
    && useradd --uid 10001 --gid hub --no-create-home --home-dir /app --shell /usr/sbin/nologin hub
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
# the default HUB_KAFKA_TOPICS_FILE; the chart mounts its ConfigMap instead
COPY topics.yaml ./
USER 10001:10001
EXPOSE 8000 9100
ENTRYPOINT ["hub"]
CMD ["worker"]
