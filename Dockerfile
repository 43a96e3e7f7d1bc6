# The reminder service. `docker run` with no command runs `reminders run` (scheduler and
# workers in one process) on an SQLite database in the /data volume; set
# REMINDERS_DATABASE_URL (PostgreSQL) and REMINDERS_BROKER_URL to run `reminders migrate`,
# `dramatiq worker.actors` and `periodiq worker.actors` from it instead (docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY outbox ./outbox
# A fixed uid, so that a bind-mounted /data can be given to it (chown 10001 DIR).
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /data reminders \
    && mkdir /data \
    && chown reminders:reminders /data
USER reminders
# The one writable place: the default database, and anything a command writes relative to
# its working directory (`reminders demo` writes demo.db), live in the volume.
WORKDIR /data
VOLUME /data
ENV TZ=UTC PYTHONUNBUFFERED=1 REMINDERS_DATABASE_URL=sqlite:////data/reminders.db
# The health check docs/operations.md recommends: database reachable and migrated, broker (when
# set) answering, no row waiting longer than 15 minutes. Connecting is bounded at 10 s.
HEALTHCHECK --interval=30s --timeout=20s --start-period=1m --retries=3 \
    CMD ["reminders", "health", "--max-pending-age", "15m", "--allow-dead"]
CMD ["reminders", "run"]
