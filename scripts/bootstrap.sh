# Shared set-up for scripts/run and scripts/test (sourced, not executed):
# a virtualenv in .venv with Leadwire and its test tools, and the local RabbitMQ and PostgreSQL
# started if they are installed but down.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "==> creating virtualenv .venv"
    "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "==> installing Leadwire and its dependencies into .venv"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[test]"
    touch "$stamp"
fi

apt_install() {  # best effort: only as root on Debian-like machines
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1; } \
            || echo "warning: could not install $*" >&2
    fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ensure_services() {
    if ! port_open 5672; then
        command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
        echo "==> starting RabbitMQ"
        rabbitmq-server -detached >/dev/null 2>&1 || service rabbitmq-server start >/dev/null 2>&1 || true
        for _ in $(seq 60); do port_open 5672 && break; sleep 1; done
    fi
    if ! port_open 5432; then
        command -v pg_ctlcluster >/dev/null || apt_install postgresql
        echo "==> starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start >/dev/null 2>&1 \
            || service postgresql start >/dev/null 2>&1 || true
        for _ in $(seq 60); do port_open 5432 && break; sleep 1; done
    fi
    # amqp-publish: the tests publish leads with it, as a source without FastStream would.
    command -v amqp-publish >/dev/null || apt_install amqp-tools
    # chromium: the browser tests drive Debian's build through Playwright (no browser download).
    command -v chromium >/dev/null || apt_install chromium
    # promtool (Debian's prometheus package): tests/unit/test_ops_config.py checks the alert rules.
    command -v promtool >/dev/null || apt_install --no-install-recommends prometheus
}

export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}"
