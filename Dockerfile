# reachprobe agent image. Build: `docker build -t reachprobe .` (podman: add `--format docker`,
# or the HEALTHCHECK is dropped). Run, with the config mounted read-only:
#
#   docker run -d --name reachprobe --cap-add NET_RAW -p 127.0.0.1:9787:9787 \
#     -v "$PWD/reachprobe.yaml:/etc/reachprobe/config.yaml:ro" reachprobe
#
# The mounted config decides where /metrics listens: inside a container `agent.listen` must be
# "0.0.0.0:9787" for a published port to reach it (the default 127.0.0.1 is the container's own
# loopback), or null for a push-only agent (remote_write) that opens no port. Beyond loopback
# the agent refuses to start unless the config secures /metrics (agent.web_config: TLS or basic
# auth) or opens it on a network you trust (agent.insecure_listen: true, as the compose stack
# does, whose agent publishes no port). The image starts
# with every capability dropped for its non-root user; `--cap-add NET_RAW` is only for raw
# probes (off by default). docs/operators.md has the whole story.
FROM python:3.11-slim-bookworm

# One virtualenv for the agent, so that the image's own Python packages stay untouched.
ENV VIRTUAL_ENV=/opt/reachprobe \
    PATH=/opt/reachprobe/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent agent
COPY measure measure
COPY probes probes
COPY simlab simlab
COPY config config
RUN python3 -m venv "$VIRTUAL_ENV" \
    && "$VIRTUAL_ENV/bin/pip" install --no-cache-dir /src \
    && rm -rf /src \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin reachprobe \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/reachprobe

# The state directory, as systemd's StateDirectory= names it: push mode (remote_write) keeps
# its disk-backed queue in $STATE_DIRECTORY/remote-write, so a restarted container sends what
# it measured while the receiver was away (docs/reliability.md). Mount a named volume there
# (`-v reachprobe-state:/var/lib/reachprobe`) for the queue to outlive the container itself.
ENV STATE_DIRECTORY=/var/lib/reachprobe
VOLUME ["/var/lib/reachprobe"]

WORKDIR /
USER 10001
EXPOSE 9787
# Asks the agent's own /healthz at the address the mounted config listens on (python, since
# the slim base has no curl); a push-only agent has no endpoint and counts as healthy.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-m", "agent.healthcheck", "/etc/reachprobe/config.yaml"]
ENTRYPOINT ["reachprobe"]
CMD ["run", "--config", "/etc/reachprobe/config.yaml"]
