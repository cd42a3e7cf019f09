#!/usr/bin/env bash
# Install everything the test suite and benchmarks use, from Debian's packages: on a fresh
# Debian 12 with only a Rust toolchain (rustup), this is all that is missing, including the C
# compiler Rust links with (and that ring, a TLS dependency, compiles its C with).
# Safe to run twice; needs root (or sudo). Services these packages ship are not started here:
# every test starts its own instance, on loopback, and stops it by PID.
set -euo pipefail

PACKAGES=(
  gcc              # the linker rustc calls (cc) and the C compiler for ring's build script
  g++              # libFuzzer (C++), built by libfuzzer-sys when scripts/test.sh builds fuzz/
  make             # jemalloc, the binary's allocator, is built from source by tikv-jemalloc-sys
  libc6-dev        # C headers and crt files gcc needs to build and link
  python3          # runs aiosmtpd, the SMTP server of the e-mail tests (a minimal Debian has none)
  python3-pip      # installs aiosmtpd from PyPI
  nginx-light      # real HTTP peers (primary/backup web servers)
  openssl          # self-signed certificates for https checks
  ca-certificates  # trust store for https checks with verification
  bind9-dnsutils   # dig
  knot             # Knot DNS: differential conformance and the DNS benchmark anchor
  knot-dnsutils    # kdig
  bind9            # BIND 9: DNS benchmark anchor
  dnsperf          # DNS load generator for bench/dns
  iproute2         # ip netns for namespace test beds
  nftables         # packet loss and drill "block" faults inside test namespaces
  unbound          # caching resolver on the test bed's client host
  curl             # reading /metrics from inside test namespaces
  procps           # ps, for process accounting in benchmarks
  haproxy          # the reference for health-check cost (bench/probes-vs-haproxy); the load-balancer tests steer a real one
  prometheus-alertmanager  # a real Alertmanager for the notification tests
  systemd          # systemd-analyze verify on dist/understudy.service
  pdns-server      # PowerDNS Authoritative: the powerdns provider's peer (its HTTP API)
  pdns-backend-sqlite3  # the sqlite3 backend that PowerDNS test instance keeps its zone in
  sqlite3          # creates that PowerDNS test database from PowerDNS's schema
  etcd-server      # a real three-member etcd for the cluster-mode tests (127.0.0.1-3)
  etcd-client      # etcdctl, to look at what the cluster tests wrote
  chromium         # headless browser for the dashboard test (driven over the DevTools protocol)
  dpkg-dev         # dpkg-shlibdeps for scripts/build-deb.sh
  binutils         # strip, for scripts/build-deb.sh
  lintian          # checks the .deb scripts/build-deb.sh builds
  postgresql-15    # PostgreSQL failover tests and benchmark: a primary and streaming standbys (initdb, pg_basebackup, pg_rewind, pgbench)
  postgresql-client-15  # psql
  postgresql-contrib    # pgbench (in postgresql-15 on Debian 12; the name is kept for other releases)
  wrk              # HTTP load generator for the proxy benchmark
  keepalived       # VRRP interoperability tests and the VIP benchmark anchor
  tshark           # decodes our VRRP packets (checksum verified) in the VIP tests
  redis-server     # Redis primary + replica for the redis replication check and the agent tests
  mariadb-server   # MariaDB primary + replica for the mysql replication check (mariadb-install-db, mariadbd)
)

# Python packages from PyPI: aiosmtpd is the SMTP server the e-mail notification tests talk to;
# moto (server mode) stands in for the Route 53 API in the provider tests.
# Debian's python3-aiosmtpd would serve only Debian's python3; the tests run whichever python3
# is first on PATH, so install for that one. Only when missing: running this twice is a no-op.
install_pip_packages() {
  pip_install() {
    python3 -m pip install --quiet --disable-pip-version-check "$@" \
      || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "$@"
  }
  if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
    echo "test dependencies: pip install aiosmtpd"
    pip_install aiosmtpd
  fi
  if ! python3 -c 'import moto.server, flask_cors' 2>/dev/null; then
    echo "test dependencies: pip install moto[server]"
    pip_install 'moto[server]'
  fi
}

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  install_pip_packages
  echo "test dependencies: all installed"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "test dependencies: installing ${missing[*]}"
# Keep package maintainer scripts from starting system services (nginx, knot, named) on
# their default ports: tests run their own instances.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  created_policy=1
fi
cleanup() { if ((created_policy)); then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
# tshark's package asks whether non-root users may capture; answer no, without a prompt.
echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
install_pip_packages
