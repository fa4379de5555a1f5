#!/usr/bin/env bash
# Make `promtool` available for tests/deploy (checks of deploy/prometheus/*.yml).
#
# Installs Debian's `prometheus` package (which ships promtool) ONLY when promtool is missing
# and apt-get is usable as root. It never fails the build: when it cannot install, it prints
# why and exits 0; the promtool tests then skip and say why.
#
# The package would normally start a Prometheus server after install. This script forbids that
# for the duration of the install (policy-rc.d exit 101 = "action forbidden") and stops any
# server the package started anyway, so nothing is left listening.
set -u

say() { echo "install-promtool: $*" >&2; }

if command -v promtool >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    say "promtool not found and not running as root: cannot apt-get install prometheus (promtool tests will skip)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    say "promtool not found and apt-get is not available (promtool tests will skip)"
    exit 0
fi

policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
fi

say "installing Debian package 'prometheus' for promtool ..."
ok=1
DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || ok=0
if [ "$ok" = 1 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 || ok=0
fi

if [ "$made_policy" = 1 ]; then
    rm -f "$policy"
fi

# Belt and braces: never leave a Prometheus server running because of this script.
if command -v service >/dev/null 2>&1 && [ -x /etc/init.d/prometheus ]; then
    service prometheus stop >/dev/null 2>&1 || true
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

if [ "$ok" = 1 ] && command -v promtool >/dev/null 2>&1; then
    say "installed: $(promtool --version 2>&1 | head -n 1)"
else
    say "could not install the 'prometheus' package (no network or apt failure); promtool tests will skip"
fi
exit 0
