#!/usr/bin/env bash
# Starts a throw-away Tryton 8.2 server on SQLite for the Tryton integration test and for
# trying the flows in flows/tryton by hand.
#
#   tests/tryton/setup.sh start   -> prints TRYTON_URL=…, TRYTON_KEY=…, TRYTON_PID=…, TRYTON_RUN=…
#   tests/tryton/setup.sh stop RUN_DIR
#
# The venv and an initialised template database are cached in $ERPSYNC_TRYTON_DIR
# (default: <repo>/target/tryton): the first start costs ~2 minutes, later ones seconds.
# Each start copies the template into its own run folder, so every server begins empty.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${ERPSYNC_TRYTON_DIR:-$here/../../target/tryton}
db=erp
series=8.2

log() { echo "tryton-setup: $*" >&2; }

install_venv() {
    if [ -f "$cache/venv/.complete" ]; then return; fi
    log "installing Tryton $series into $cache/venv"
    rm -rf "$cache/venv"
    python3 -m venv "$cache/venv"
    "$cache/venv/bin/pip" install -q --disable-pip-version-check \
        "trytond==$series.*" "trytond-party==$series.*" "trytond-product==$series.*" \
        "trytond-stock==$series.*" "trytond-sale==$series.*" "trytond-web-shop==$series.*" >&2
    touch "$cache/venv/.complete"
}

write_conf() { # $1 = folder holding the database files, $2 = port
    printf '[database]\nuri = sqlite://\npath = %s\n[web]\nlisten = 127.0.0.1:%s\n' "$1" "$2"
}

build_template() {
    if [ -f "$cache/template/$db.sqlite" ] && [ -f "$cache/template/key" ]; then return; fi
    log "initialising the template database (about a minute)"
    local work=$cache/template.tmp
    rm -rf "$work" && mkdir -p "$work/db"
    write_conf "$work/db" 0 > "$work/trytond.conf"
    echo admin > "$work/passfile"
    # The SQLite backend only opens an existing file.
    touch "$work/db/$db.sqlite"
    TRYTONPASSFILE=$work/passfile "$cache/venv/bin/trytond-admin" -c "$work/trytond.conf" -d "$db" \
        --all -u party product stock sale web_shop --activate-dependencies \
        --email admin@example.com >"$work/admin.log" 2>&1 \
        || { cat "$work/admin.log" >&2; exit 1; }
    "$cache/venv/bin/python" "$here/bootstrap.py" "$work/trytond.conf" "$db" > "$work/key" \
        2>"$work/bootstrap.log" || { cat "$work/bootstrap.log" >&2; exit 1; }
    rm -f "$work/db/$db.sqlite-wal" "$work/db/$db.sqlite-shm"
    mkdir -p "$cache/template"
    mv "$work/db/$db.sqlite" "$cache/template/$db.sqlite"
    mv "$work/key" "$cache/template/key"
    rm -rf "$work"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    mkdir -p "$cache"
    cache=$(cd "$cache" && pwd)
    # One setup at a time per cache: two concurrent installs would trample each other.
    exec 9>"$cache/.lock"
    flock 9
    install_venv
    build_template
    flock -u 9
    local port run key
    port=${TRYTON_PORT:-$(free_port)}
    run=$(mktemp -d "$cache/run.XXXXXX")
    mkdir -p "$run/db"
    # A fresh copy without WAL files: an old WAL would be replayed onto the copy.
    cp "$cache/template/$db.sqlite" "$run/db/$db.sqlite"
    write_conf "$run/db" "$port" > "$run/trytond.conf"
    key=$(cat "$cache/template/key")
    "$cache/venv/bin/trytond" -c "$run/trytond.conf" --pidfile "$run/trytond.pid" \
        >"$run/server.log" 2>&1 &
    local pid=$!
    local url=http://127.0.0.1:$port/$db/rest
    # The first request loads the module pool, so wait for a real answer, not just the socket.
    for _ in $(seq 300); do
        if ! kill -0 "$pid" 2>/dev/null; then cat "$run/server.log" >&2; log "server died"; exit 1; fi
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" \
            "$url/model/company.company" || true)
        if [ "$code" = 200 ]; then
            echo "TRYTON_URL=$url"
            echo "TRYTON_KEY=$key"
            echo "TRYTON_PID=$pid"
            echo "TRYTON_RUN=$run"
            return
        fi
        sleep 0.1
    done
    kill "$pid" || true
    cat "$run/server.log" >&2
    log "server did not answer within 30 s"
    exit 1
}

stop() { # $1 = run folder printed by start
    local run=${1:?usage: setup.sh stop RUN_DIR}
    if [ -f "$run/trytond.pid" ]; then kill "$(cat "$run/trytond.pid")" 2>/dev/null || true; fi
    rm -rf "$run"
}

case ${1:-start} in
    start) start ;;
    stop) stop "${2:-}" ;;
    *) echo "usage: $0 start | stop RUN_DIR" >&2; exit 2 ;;
esac
