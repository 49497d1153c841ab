# One image for every gateway process; docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY workers ./workers
COPY templates ./templates
COPY config ./config
RUN pip install --no-cache-dir -e . && useradd --system helpdesk
USER helpdesk
ENTRYPOINT ["helpdesk"]
CMD ["serve"]
