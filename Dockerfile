FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY outbox ./outbox
RUN pip install --no-cache-dir . && useradd --system reminders
USER reminders
ENV TZ=UTC PYTHONUNBUFFERED=1
CMD ["reminders", "run"]
