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

start_rabbitmq() {
    rabbitmq-server -detached >/dev/null 2>&1 || service rabbitmq-server start >/dev/null 2>&1 || true
    for _ in $(seq 60); do port_open 5672 && break; sleep 1; done
}

# RabbitMQ 3.x's file handle cache lets the broker hold about 90% of its open-files limit in
# sockets and queue files together, and makes every new connection wait in the AMQP handshake
# while it is over that. Started as root, `rabbitmq-server` switches to the rabbitmq user with
# `su`, which sets the soft limit to 1024: a few hundred quorum queues (a test run's topologies)
# then exceed it and the broker accepts TCP but never finishes a handshake (seen here: CI ran into
# its 90-minute limit with every test timing out). rabbitmq-env.conf is sourced as the rabbitmq
# user after `su`, so a soft limit raised there (up to the hard limit) holds for every start.
RABBITMQ_OPEN_FILES=20000
raise_rabbitmq_open_files() {
    [ "$(id -u)" = 0 ] || return 0
    local pid soft conf=/etc/rabbitmq/rabbitmq-env.conf
    pid="$(pgrep -u rabbitmq -f -- '-s rabbit boot' | head -1 || true)"
    [ -n "$pid" ] || return 0
    soft="$(awk '/^Max open files/ {print $4}' "/proc/$pid/limits")"
    [ "$soft" = unlimited ] || [ "$soft" -ge "$RABBITMQ_OPEN_FILES" ] && return 0
    [ -d /etc/rabbitmq ] || return 0
    grep -q '^ulimit -S -n' "$conf" 2>/dev/null \
        || echo "ulimit -S -n $RABBITMQ_OPEN_FILES 2>/dev/null || ulimit -S -n \"\$(ulimit -H -n)\"  # Leadwire scripts/bootstrap.sh: RabbitMQ's file handle cache needs more than su's 1024" >> "$conf"
    echo "==> restarting RabbitMQ: it runs with $soft open files at most, too few for the tests' queues"
    timeout 60 rabbitmqctl shutdown >/dev/null 2>&1 || pkill -9 -u rabbitmq beam.smp || true
    for _ in $(seq 30); do port_open 5672 || break; sleep 1; done
    start_rabbitmq
}

ensure_services() {
    if ! port_open 5672; then
        command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
        echo "==> starting RabbitMQ"
        start_rabbitmq
    fi
    raise_rabbitmq_open_files
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
