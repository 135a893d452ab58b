FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md worker.py ./
COPY agentrun ./agentrun
COPY workflows ./workflows
COPY activities ./activities
COPY starter ./starter
RUN pip install --no-cache-dir .
RUN useradd --create-home agentrun && mkdir -p /data && chown agentrun /data
USER agentrun
CMD ["agentrun-worker"]
