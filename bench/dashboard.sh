#!/usr/bin/env bash
# The dashboard's cost on the daemon (issue 16): page weight, and the daemon's CPU and memory
# with no dashboard open versus 10 open, plus detection time in both cases.
#
#   bench/dashboard.sh [SECONDS_PER_PHASE]     (default 20; needs nginx, curl)
#   UNDERSTUDY_BIN=target/release/understudy bench/dashboard.sh
#
# One open dashboard, as the daemon sees it, is what app.js does: one Server-Sent Events
# connection (/api/v1/events/stream), GET /api/v1/services every 2 s while visible, and
# GET services + incidents + drills after each event. Here each of the 10 "browsers" is a
# `curl -N` on the stream plus a loop making exactly those requests (a real Chromium per
# client would mostly measure Chromium on this 2-core machine). In both phases an operator
# drains and re-enables the backup every 2 s, so events flow to every stream.
# Detection: at the end of each phase (the operator stopped, the dashboards still open) the
# primary nginx is killed three times (restarted and failed back in between); the incident's
# measured detection and RTO are printed (median).
# Everything listens on 127.0.0.x; every process started here is stopped by PID on exit.
set -euo pipefail

secs=${1:-20}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${UNDERSTUDY_BIN:-${CARGO_TARGET_DIR:-$here/target}/release/understudy}
[[ -x $bin ]] || { echo "no binary at $bin: cargo build --release (or set UNDERSTUDY_BIN)" >&2; exit 1; }
command -v curl >/dev/null && [[ -x /usr/sbin/nginx ]] || { echo "needs curl and nginx: scripts/install-test-deps.sh" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
api_port=$(free_port)
api="http://127.0.0.1:$api_port"

start_nginx() { # name ip; sets $started (no command substitution: that would wait for nginx)
  local d="$work/nginx-$1"
  mkdir -p "$d"
  cat > "$d/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1; pid $d/nginx.pid; error_log $d/error.log warn;
events { worker_connections 256; }
http { access_log off; client_body_temp_path $d/b; proxy_temp_path $d/p; fastcgi_temp_path $d/f; uwsgi_temp_path $d/u; scgi_temp_path $d/s;
  server { listen $2:$port; location = /health { return 200 "ok\n"; } } }
EOF
  /usr/sbin/nginx -c "$d/nginx.conf" -p "$d" >/dev/null 2>"$d/stderr" &
  started=$!
  pids+=("$started")
}
wait_url() { for _ in $(seq 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.05; done; echo "timeout waiting for $1" >&2; exit 1; }

start_nginx primary 127.0.0.2; primary=$started
start_nginx backup 127.0.0.3
cat > "$work/understudy.toml" <<EOF
[daemon]
data_dir = "$work/data"
api = "127.0.0.1:$api_port"

[[service]]
name = "www"
failback = "auto"
failback_hold = "1s"

[service.check]
kind = "http"
port = $port
path = "/health"
interval = "200ms"
timeout = "150ms"
fall = 3
rise = 2

[[service.target]]
name = "primary"
address = "127.0.0.2"

[[service.target]]
name = "backup"
address = "127.0.0.3"
EOF
"$bin" run -c "$work/understudy.toml" >"$work/daemon.log" 2>&1 &
daemon=$!; pids+=("$daemon")
wait_url "$api/healthz"
token=$(cat "$work/data/api-token")
active() { curl -fs "$api/api/v1/services/www" | python3 -c 'import json,sys; print(json.load(sys.stdin)["active"])'; }
wait_active() { for _ in $(seq 300); do [[ $(active) == "$1" ]] && return 0; sleep 0.05; done; echo "timeout waiting for active=$1" >&2; exit 1; }
wait_active primary

# Page weight: the three embedded files, then what a first load also fetches from the API.
static=0
for f in / /dashboard/app.js /dashboard/style.css; do
  n=$(curl -fs -o /dev/null -w '%{size_download}' "$api$f"); static=$((static + n))
done
apis=0
for f in /api/v1/services /api/v1/incidents /api/v1/drills /api/v1/event-log "/api/v1/events?since=0&limit=50"; do
  n=$(curl -fs -o /dev/null -w '%{size_download}' "$api$f"); apis=$((apis + n))
done
gz=$(for f in / /dashboard/app.js /dashboard/style.css; do curl -fs "$api$f"; done | gzip -9 | wc -c)

operator() { # drain/enable the backup every 2 s
  while true; do
    for verb in drain enable; do
      curl -fs -o /dev/null -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d '{}' "$api/api/v1/services/www/targets/backup/$verb" || true
      sleep 1
    done
  done
}

enable_backup() {
  curl -fs -o /dev/null -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d "{}" "$api/api/v1/services/www/targets/backup/enable" || true
}

browser() { # $1: index; one stream and the page's requests
  local log="$work/stream-$1"
  curl -sN "$api/api/v1/events/stream" > "$log" &
  local stream=$!
  local seen=0
  trap 'kill $stream 2>/dev/null; exit 0' TERM
  while true; do
    curl -fs -o /dev/null "$api/api/v1/services"
    local now; now=$(grep -c '^id:' "$log" || true)
    if ((now > seen)); then
      seen=$now
      curl -fs -o /dev/null "$api/api/v1/services"; curl -fs -o /dev/null "$api/api/v1/incidents"; curl -fs -o /dev/null "$api/api/v1/drills"
    fi
    sleep 2
  done
}

ticks() { awk '{ print $14 + $15 }' "/proc/$daemon/stat"; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$daemon/status"; }
hz=$(getconf CLK_TCK)

detection() { # three failovers; writes "median_detection_ms median_rto_ms" to $work/detection
  local out=()
  for _ in 1 2 3; do
    kill -9 "$primary"; wait "$primary" 2>/dev/null || true
    wait_active backup
    local id; id=$(curl -fs "$api/api/v1/services/www" | python3 -c 'import json,sys; print(json.load(sys.stdin)["open_incident"])')
    out+=("$(curl -fs "$api/api/v1/incidents/$id" | python3 -c 'import json,sys; i=json.load(sys.stdin); print(i["detection_ms"], i["rto_ms"])')")
    start_nginx primary 127.0.0.2; primary=$started
    wait_active primary
  done
  printf '%s\n' "${out[@]}" | python3 -c 'import sys,statistics as s; r=[l.split() for l in sys.stdin]; print("%.1f %.1f" % (s.median(float(a) for a,_ in r), s.median(float(b) for _,b in r)))' > "$work/detection"
}

phase() { # $1: clients
  local clients=() op
  operator & op=$!; pids+=("$op")
  for i in $(seq "$1"); do browser "$i" & clients+=($!); pids+=("${clients[-1]}"); done
  sleep 2 # let the streams connect
  local t0 r0; t0=$(ticks); r0=$(date +%s.%N)
  sleep "$secs"
  local t1 r1; t1=$(ticks); r1=$(date +%s.%N)
  local rss; rss=$(rss_kb)
  local streams=0
  for i in $(seq "$1"); do ((streams += $(grep -c '^id:' "$work/stream-$i" || true))) || true; done
  # The operator stops (a drained backup would hold the failover up); the dashboards stay.
  kill "$op"; wait "$op" 2>/dev/null || true
  enable_backup
  detection
  local det; det=$(cat "$work/detection")
  if ((${#clients[@]})); then
    kill "${clients[@]}" 2>/dev/null || true
    wait "${clients[@]}" 2>/dev/null || true
  fi
  python3 - "$1" "$t0" "$t1" "$r0" "$r1" "$hz" "$rss" "$streams" $det <<'EOF'
import sys
n, t0, t1, r0, r1, hz, rss, streams, det, rto = sys.argv[1:]
cpu = (int(t1) - int(t0)) / int(hz) / (float(r1) - float(r0)) * 100
print(f"{n:>2} dashboards: daemon CPU {cpu:5.2f} % of one core, RSS {int(rss)/1024:6.1f} MiB, "
      f"events streamed {streams}, detection {det} ms, RTO {rto} ms (median of 3)")
EOF
}

echo "dashboard page weight: $static bytes of HTML/JS/CSS ($((gz)) bytes gzipped), first load with its API reads: $((static + apis)) bytes"
echo "daemon: $bin, checks every 200 ms, $secs s per phase"
phase 0
phase 10
