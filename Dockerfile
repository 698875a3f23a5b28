# The reference image: Debian 12 with its own tshark and sharkd (Wireshark 4.0), the app in a
# virtualenv, static files collected, served by daphne. See docker-compose.yml and the README.
FROM debian:12-slim

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/venv/bin:$PATH

# Keep dumpcap non-setuid: the app only reads files, it never captures from interfaces.
RUN echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections \
    && apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv tshark wireshark-common ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Only the runtime part of requirements.txt: the tests and their tooling stay out of the image.
COPY requirements.txt .
RUN sed '/^# Tests and tooling/,$d' requirements.txt > /tmp/runtime-requirements.txt \
    && python3 -m venv /venv \
    && /venv/bin/pip install --no-cache-dir -r /tmp/runtime-requirements.txt

COPY . .

# collectstatic reads the settings, which refuse DEBUG=0 without a key of its own; this one
# signs nothing and is not kept.
ENV DEBUG=0 \
    CAPTURES_DIR=/data/captures \
    STATIC_ROOT=/app/staticfiles
RUN SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput \
    && useradd --system --home-dir /app explorer \
    && mkdir -p /data/captures \
    && chown explorer /data/captures

USER explorer
EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "explorer_site.asgi:application"]
