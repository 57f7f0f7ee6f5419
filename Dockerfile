# One image for every Leadwire service; docker-compose picks the service with SERVICE.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY examples ./examples
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 leadwire
USER leadwire
ENV SERVICE=router
# Health: the process touches a heartbeat file while it reaches RabbitMQ and PostgreSQL
# (shared/health.py); a file, not a port, so scaled replicas never collide.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -m shared.health
CMD ["sh", "-c", "exec faststream run services.${SERVICE}.main:app"]
