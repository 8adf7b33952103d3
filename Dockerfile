# One image for every orderflow process; the command picks the part (see docker-compose.yml).
FROM python:3.11-slim
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY orderflow orderflow
COPY bridge bridge
COPY payments payments
COPY mail mail
COPY activities activities
COPY workflows workflows
COPY workers workers
COPY app app
RUN uv sync --frozen --no-dev
ENV PATH="/app/.venv/bin:$PATH" \
    ORDERFLOW_EMBEDDED_TEMPORAL=false \
    ORDERFLOW_EMBEDDED_REDIS=false \
    ORDERFLOW_EMBEDDED_SMTP=false \
    ORDERFLOW_SEED_CATALOGUE=false \
    ORDERFLOW_HTTP_HOST=0.0.0.0
ENTRYPOINT ["orderflow"]
CMD ["run"]
