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
  prometheus-alertmanager  # a real Alertmanager for the notification tests
  systemd          # systemd-analyze verify on dist/understudy.service
  keepalived       # VRRP interoperability tests and the VIP benchmark anchor
  tshark           # decodes our VRRP packets (checksum verified) in the VIP tests
)

# Python packages from PyPI: aiosmtpd is the SMTP server the e-mail notification tests talk to.
# Debian's python3-aiosmtpd would serve only Debian's python3; the tests run whichever python3
# is first on PATH, so install for that one. Only when missing: running this twice is a no-op.
install_pip_packages() {
  if python3 -c 'import aiosmtpd' 2>/dev/null; then
    return
  fi
  echo "test dependencies: pip install aiosmtpd"
  python3 -m pip install --quiet --disable-pip-version-check aiosmtpd \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages aiosmtpd
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
