#!/usr/bin/env bash
# Build the Debian package of understudy with dpkg-deb alone (no cargo-deb, no debhelper), so
# that CI and a fresh Debian 12 need nothing beyond `dpkg-dev` and the Rust toolchain.
#
#   scripts/build-deb.sh                      # cargo build --release, then package
#   scripts/build-deb.sh --binary PATH        # package an already built binary
#   scripts/build-deb.sh --out DIR            # where the .deb goes (default: target/debian)
#
# The package installs:
#   /usr/bin/understudy
#   /lib/systemd/system/understudy.service    dist/understudy.service, with /usr/bin and the
#                                             static `understudy` user instead of DynamicUser
#   /etc/understudy/understudy.toml           examples/quickstart.toml with the packaged
#                                             data_dir (a conffile; 0640 root:understudy)
#   /var/lib/understudy                       created by postinst (0750 understudy:understudy)
#   /usr/share/man/man1/understudy*.1.gz      `understudy man --dir`
#   bash, zsh and fish completions            `understudy completions SHELL`
#   /usr/share/doc/understudy/                copyright, changelog, README.md
# The maintainer scripts honour $DPKG_ROOT (dpkg --root ... --force-script-chrootless), which
# is how the test suite installs the package into a throwaway directory.
# DEB_COMPRESSION=gzip builds faster (the tests use it); the default is xz.
# Prints the path of the .deb on the last line.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
binary=""
out="$here/target/debian"
while (($#)); do
  case $1 in
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "build-deb.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for tool in dpkg-deb dpkg-shlibdeps gzip strip; do
  command -v "$tool" >/dev/null || { echo "build-deb.sh: $tool is missing: apt-get install dpkg-dev binutils" >&2; exit 1; }
done
if [[ -z $binary ]]; then
  (cd "$here" && cargo build --release --locked)
  binary="${CARGO_TARGET_DIR:-$here/target}/release/understudy"
fi
[[ -x $binary ]] || { echo "build-deb.sh: no executable at $binary" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/Cargo.toml" | head -1)
debversion="${version}-1"
arch=$(dpkg --print-architecture)
maintainer=${DEB_MAINTAINER:-"understudy maintainers <maintainers@understudy.invalid>"}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/understudy" \
  "$root/usr/share/man/man1" "$root/usr/share/doc/understudy" \
  "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
  "$root/usr/share/fish/vendor_completions.d" "$root/usr/share/lintian/overrides"

install -m 0755 "$binary" "$root/usr/bin/understudy"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/understudy"
bin="$root/usr/bin/understudy"

# The unit: the packaged binary path and the static user the package creates.
sed -e 's|/usr/local/bin/understudy|/usr/bin/understudy|' \
    -e '/^DynamicUser=yes$/d' \
    -e 's|^StateDirectoryMode=0700$|StateDirectoryMode=0750|' \
    -e '1,/^\[Unit\]/{/^#/d}' \
    "$here/dist/understudy.service" > "$root/lib/systemd/system/understudy.service"
sed -i '1i # Installed by the understudy package. Edit /etc/understudy/understudy.toml, then:\n#   systemctl enable --now understudy\n# Reload after editing (validated first; a bad file keeps the old one running):\n#   understudy check-config /etc/understudy/understudy.toml \&\& systemctl reload understudy\n# Override settings with `systemctl edit understudy` rather than editing this file.' \
  "$root/lib/systemd/system/understudy.service"
sed -i 's|^# A dedicated, unprivileged user allocated by systemd; its state lives in /var/lib/understudy.$|# The unprivileged user the package created; its state lives in /var/lib/understudy.|' \
  "$root/lib/systemd/system/understudy.service"
chmod 0644 "$root/lib/systemd/system/understudy.service"

{
  echo "# understudy's config (the quick start from README.md). Edit the targets and check, then:"
  echo "#   understudy check-config /etc/understudy/understudy.toml && systemctl enable --now understudy"
  echo "# The dashboard and API listen on the address below; the API token is in data_dir/api-token."
  sed -e '1{/^#/d}' -e 's|^data_dir = .*|data_dir = "/var/lib/understudy"|' "$here/examples/quickstart.toml"
} > "$root/etc/understudy/understudy.toml"
chmod 0644 "$root/etc/understudy/understudy.toml"
"$bin" check-config "$root/etc/understudy/understudy.toml" >/dev/null

"$bin" man --dir "$work/man"
for page in "$work/man"/*.1; do
  gzip -9n < "$page" > "$root/usr/share/man/man1/$(basename "$page").gz"
done
"$bin" completions bash > "$root/usr/share/bash-completion/completions/understudy"
"$bin" completions zsh > "$root/usr/share/zsh/vendor-completions/_understudy"
"$bin" completions fish > "$root/usr/share/fish/vendor_completions.d/understudy.fish"

doc="$root/usr/share/doc/understudy"
cp "$here/README.md" "$doc/README.md"
cat > "$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: understudy

Files: *
Copyright: 2025-2026 understudy contributors
License: Apache-2.0

License: Apache-2.0
 On Debian systems, the full text of the Apache License, Version 2.0 can be
 found in /usr/share/common-licenses/Apache-2.0.
EOF
date=$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || date +%s)}")
printf 'understudy (%s) unstable; urgency=medium\n\n  * Package built from the project tree by scripts/build-deb.sh.\n\n -- %s  %s\n' \
  "$debversion" "$maintainer" "$date" | gzip -9n > "$doc/changelog.Debian.gz"
cat > "$root/usr/share/lintian/overrides/understudy" <<'EOF'
# Only when installing into another root ($DPKG_ROOT), where getent would read this system's users.
understudy: maintainer-script-should-not-parse-etc-passwd-or-group *
# Built from the project tree, not uploaded to Debian: there is no ITP bug to close.
understudy: initial-upload-closes-no-bugs *
EOF
find "$root/usr/share" -type f -exec chmod 0644 {} +

# Shared-library dependencies, as dpkg-shlibdeps computes them for any Debian package.
mkdir -p "$work/src/debian"
printf 'Source: understudy\n\nPackage: understudy\nArchitecture: any\n' > "$work/src/debian/control"
shlibs=$(cd "$work/src" && dpkg-shlibdeps -O "$bin" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')

installed_kb=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: understudy
Version: $debversion
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_kb
Depends: ${shlibs:+$shlibs, }passwd
Recommends: systemd
Section: net
Priority: optional
Description: automatic failover for web services
 understudy checks a primary server and its backups, decides which one gets
 the traffic, and moves it: it answers DNS for the name itself, updates the
 DNS server you have, or runs hooks. Every transition is recorded in a
 durable event log, failovers open incidents with measured detection and
 switch times, and notifications go to Alertmanager, PagerDuty, Slack,
 webhooks or e-mail. Drills rehearse a failure on demand.
 .
 The daemon serves a JSON API, Prometheus metrics and a live web dashboard.
EOF
echo "/etc/understudy/understudy.toml" > "$root/DEBIAN/conffiles"

cat > "$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
# Create the system user and the data directory; make the config readable by the daemon only.
set -e
if [ "$1" = "configure" ]; then
    root="${DPKG_ROOT:-}"
    if [ -z "$root" ]; then
        getent group understudy >/dev/null || groupadd --system understudy
        getent passwd understudy >/dev/null || useradd --system --gid understudy --home-dir /var/lib/understudy \
            --no-create-home --shell /usr/sbin/nologin --comment "understudy failover daemon" understudy
        uid=$(getent passwd understudy | cut -d: -f3)
        gid=$(getent group understudy | cut -d: -f3)
    else
        # Installing into another root (dpkg --root): getent would look at this system's users.
        grep -q '^understudy:' "$root/etc/group" || groupadd --prefix "$root" --system understudy
        grep -q '^understudy:' "$root/etc/passwd" || useradd --prefix "$root" --system --gid understudy \
            --home-dir /var/lib/understudy --no-create-home --shell /usr/sbin/nologin --comment "understudy failover daemon" understudy
        uid=$(awk -F: '$1 == "understudy" { print $3 }' "$root/etc/passwd")
        gid=$(awk -F: '$1 == "understudy" { print $3 }' "$root/etc/group")
    fi
    install -d -o "$uid" -g "$gid" -m 0750 "$root/var/lib/understudy"
    # The config may hold secrets (TSIG keys, tokens): root writes it, the daemon's group reads it.
    if ! dpkg-statoverride ${root:+"--root=$root"} --list /etc/understudy/understudy.toml >/dev/null 2>&1; then
        chown "0:$gid" "$root/etc/understudy/understudy.toml"
        chmod 0640 "$root/etc/understudy/understudy.toml"
    fi
    if [ -z "$root" ] && [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
    fi
fi
exit 0
EOF

cat > "$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
# Stop the daemon before its binary goes away (it records its stop in the event log).
set -e
if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ] && [ "$1" = "remove" ]; then
    deb-systemd-invoke stop understudy.service >/dev/null || true
fi
exit 0
EOF

cat > "$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
# On purge, remove the data directory (event log, overrides, token, drill reports). The system
# user stays, as Debian recommends: files it owned elsewhere must not pass to a new user.
set -e
root="${DPKG_ROOT:-}"
if [ "$1" = "purge" ]; then
    rm -rf "$root/var/lib/understudy"
    rmdir --ignore-fail-on-non-empty "$root/etc/understudy" 2>/dev/null || true
fi
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
exit 0
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

(cd "$root" && find . \( -path ./DEBIAN -o -path ./etc \) -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

mkdir -p "$out"
deb="$out/understudy_${debversion}_${arch}.deb"
dpkg-deb --root-owner-group "-Z${DEB_COMPRESSION:-xz}" --build "$root" "$deb" >/dev/null
echo "$deb"
