#!/usr/bin/env bash
# VIP failover benchmark: keepalived (the anchor) and understudy side by side, in the same
# namespaces, with equivalent settings; prints the client-observed gap (median of N runs) and
# the ratio.
#
#   sudo bench/vip/run.sh [N]          # N runs per cell, default 10
#   CELLS="crash 100ms" TOOLS=understudy KEEP=1 bench/vip/run.sh 1   # one cell, keep the logs
#
# Topology (198.18.0.0/24, no route out): client 198.18.0.10, node a 198.18.0.11, node b
# 198.18.0.12 on one bridge; VIP 198.18.0.100; nginx on a and b answers its node name on the
# VIP. bench/vip/probe.py in the client opens a new TCP connection every 5 ms and reports the
# longest time without an answer.
#
# Scenarios (a has priority 150, b 100):
#   crash    the master host dies: its link goes down and its speaker is killed (SIGKILL)
#   app      nginx on the master is killed; the speaker's tracked check notices
#            (understudy: http check every 100 ms, fall 2; keepalived: track_script with curl,
#            interval 1 s, fall 2, its smallest interval)
#   clean    the master's speaker is stopped with SIGTERM (both resign with priority 0)
#   failback the crashed master comes back and preempts (understudy preempt_delay 0)
# Everything started here is stopped by PID and the namespaces are deleted on exit.
set -euo pipefail

N=${1:-10}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${UNDERSTUDY_BIN:-$ROOT/target/release/understudy}
[[ -x $BIN ]] || BIN=$ROOT/target/debug/understudy
[[ -x $BIN ]] || { echo "build understudy first (cargo build --release)"; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "needs root (network namespaces)"; exit 1; }
for t in keepalived nginx python3 curl; do command -v $t >/dev/null || { echo "missing $t: run scripts/install-test-deps.sh"; exit 1; }; done

P=uvb$$
W=$(mktemp -d /tmp/vipbench.XXXXXX)
VIP=198.18.0.100
declare -A IP=([c]=198.18.0.10 [a]=198.18.0.11 [b]=198.18.0.12)
PIDS=()

cleanup() {
  for f in "$W"/*.pid "$W"/*/*.pid; do [[ -f $f ]] && kill -9 "$(cat "$f")" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for n in c a b s; do ip netns del "$P$n" 2>/dev/null || true; done
  if [[ -n ${KEEP:-} ]]; then echo "kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

ns() { ip netns exec "$P$1" "${@:2}"; }

ip netns add "${P}s"
ns s ip link add br0 type bridge
ns s ip link set br0 up
for n in c a b; do
  ip netns add "$P$n"
  ip link add "$P${n}h" netns "$P$n" type veth peer name "$P${n}s" netns "${P}s"
  ns $n ip link set lo up
  ns $n ip link set "$P${n}h" name eth0
  ns $n ip addr add "${IP[$n]}/24" dev eth0
  ns $n ip link set eth0 up
  ns s ip link set "$P${n}s" master br0
  ns s ip link set "$P${n}s" up
done

nginx_start() { # node
  local d=$W/nginx-$1
  mkdir -p "$d"
  cat >"$d/nginx.conf" <<EOF
daemon on; master_process off; pid $d/nginx.pid; error_log $d/error.log warn;
events { worker_connections 256; }
http { access_log off; client_body_temp_path $d/b; proxy_temp_path $d/p; fastcgi_temp_path $d/f; uwsgi_temp_path $d/u; scgi_temp_path $d/s;
  server { listen 80; location / { default_type text/plain; return 200 "$1\n"; } } }
EOF
  ns "$1" nginx -c "$d/nginx.conf" -p "$d"
}
nginx_stop() { [[ -f $W/nginx-$1/nginx.pid ]] && kill -9 "$(cat "$W/nginx-$1/nginx.pid")" 2>/dev/null; rm -f "$W/nginx-$1/nginx.pid"; }

has_vip() { ns "$1" ip -4 -o addr show dev eth0 | grep -q "inet $VIP/"; }
wait_until() { # seconds, command...
  local end=$((SECONDS + $1)); shift
  until "$@"; do ((SECONDS < end)) || return 1; sleep 0.02; done
}
only() { has_vip "$1" && ! has_vip "$2"; }

# start_speaker TOOL NODE PRIORITY ADVERT
start_speaker() {
  local tool=$1 n=$2 prio=$3 adv=$4 d=$W/$1-$2
  rm -rf "$d"; mkdir -p "$d"
  if [[ $tool == understudy ]]; then
    cat >"$d/u.toml" <<EOF
[daemon]
data_dir = "$d/data"
api = "127.0.0.1:9190"
[[service]]
name = "local-web"
[service.check]
kind = "http"
port = 80
path = "/"
interval = "100ms"
timeout = "50ms"
fall = 2
rise = 2
[[service.target]]
name = "self"
address = "${IP[$n]}"
[[vip]]
name = "web"
interface = "eth0"
vrid = 51
priority = $prio
advert_interval = "$adv"
addresses = ["$VIP/24"]
track = ["local-web"]
EOF
    # Not through the ns function: `&` on a function forks a shell, and $! would be its PID.
    ip netns exec "$P$n" "$BIN" run -c "$d/u.toml" >"$d/log" 2>&1 &
    echo $! >"$d/main.pid"
  else
    local int=${adv%ms}; [[ $adv == *ms ]] && int=$(awk "BEGIN{print $int/1000}") || int=${adv%s}
    cat >"$d/k.conf" <<EOF
global_defs { router_id node-$n
  vrrp_version 3
  enable_script_security
  script_user root
}
vrrp_script web { script "/usr/bin/curl -sf -m 0.5 -o /dev/null http://${IP[$n]}/"
  interval 1
  fall 2
  rise 2
}
vrrp_instance web { state BACKUP
  interface eth0
  virtual_router_id 51
  priority $prio
  advert_int $int
  virtual_ipaddress { $VIP/24 }
  track_script { web }
}
EOF
    ip netns exec "$P$n" keepalived -n -P -l -D -f "$d/k.conf" -p "$d/main.pid" -r "$d/vrrp.pid" -c "$d/chk.pid" >"$d/log" 2>&1 &
    wait_until 10 test -s "$d/vrrp.pid"
  fi
}
stop_speaker() { # tool node signal
  local d=$W/$1-$2
  for f in "$d/vrrp.pid" "$d/main.pid"; do [[ -f $f ]] && kill -"$3" "$(cat "$f")" 2>/dev/null || true; done
  if [[ $3 == TERM ]]; then wait_until 5 bash -c "! kill -0 $(cat "$d/main.pid" 2>/dev/null || echo 1) 2>/dev/null" || true; fi
  rm -f "$d/main.pid" "$d/vrrp.pid"
}

probe_start() {
  rm -f "$W/stop" "$W/stop.ready" "$W/stop.served"
  ip netns exec "${P}c" python3 "$HERE/probe.py" $VIP 80 120 "$W/stop" >"$W/probe.json" &
  PROBE=$!
  PIDS+=("$PROBE")
  wait_until 10 test -e "$W/stop.ready"
  sleep 0.3
}
probe_gap() { touch "$W/stop"; wait "$PROBE" || true; python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["max_gap_ms"])' "$W/probe.json"; }

# one TOOL SCENARIO ADVERT -> prints the gap in ms
one() {
  local tool=$1 sc=$2 adv=$3
  nginx_start a; nginx_start b
  start_speaker "$tool" a 150 "$adv"
  start_speaker "$tool" b 100 "$adv"
  wait_until 30 only a b || { echo "a never became the only master" >&2; return 1; }
  sleep 0.5
  if [[ $sc == failback ]]; then
    ns a ip link set eth0 down; stop_speaker "$tool" a KILL
    wait_until 30 has_vip b
    ns a ip addr del $VIP/24 dev eth0 2>/dev/null || true
    ns a ip link set eth0 up
    sleep 0.5
  fi
  probe_start
  case $sc in
    # The link first: keepalived's VRRP child resigns (priority 0) when its parent dies, which
    # a crashed host never does.
    crash) ns a ip link set eth0 down; stop_speaker "$tool" a KILL; wait_until 30 has_vip b ;;
    app) nginx_stop a; wait_until 30 has_vip b ;;
    clean) stop_speaker "$tool" a TERM; wait_until 30 has_vip b ;;
    failback) start_speaker "$tool" a 150 "$adv"; wait_until 30 only a b ;;
  esac
  sleep 0.5
  probe_gap
  stop_speaker "$tool" a KILL; stop_speaker "$tool" b KILL
  nginx_stop a; nginx_stop b
  ns a ip link set eth0 up
  for n in a b; do ns $n ip addr del $VIP/24 dev eth0 2>/dev/null || true; done
}

median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }

printf "%-28s %14s %14s %8s %4s\n" "scenario (advert)" "keepalived ms" "understudy ms" "ratio" "n"
IFS=, read -r -a CELLS <<<"${CELLS:-crash 1s,crash 100ms,app 1s,clean 1s,failback 1s}"
for cell in "${CELLS[@]}"; do
  set -- $cell
  declare -A med=()
  for tool in ${TOOLS:-keepalived understudy}; do
    : >"$W/gaps"
    for ((i = 0; i < N; i++)); do one "$tool" "$1" "$2" >>"$W/gaps" || echo "run failed ($tool $cell)" >&2; cp "$W/probe.json" "$W/probe-$tool-$i.json" 2>/dev/null || true; done
    [[ -n ${VERBOSE:-} ]] && echo "$tool $cell: $(tr "\n" " " <"$W/gaps")" >&2
    med[$tool]=$(median <"$W/gaps")
  done
  k=${med[keepalived]:--} u=${med[understudy]:--}
  ratio=$(awk -v k="$k" -v u="$u" 'BEGIN { if (u > 0 && k > 0) printf "%.1fx", k / u; else print "-" }')
  printf "%-28s %14s %14s %8s %4s\n" "$1 ($2)" "$k" "$u" "$ratio" "$N"
done
echo "protocol limit (3 x advert + skew, priority 100): 1s -> 3609 ms, 100ms -> 361 ms"
