#!/bin/sh
# Install what the real-DPDK tests need: dpdk-testpmd (Debian's dpdk-dev, DPDK 22.11),
# stdbuf (coreutils; testpmd's stdout through a pipe is block-buffered without it) and
# ip (iproute2; the PVP test makes a veth pair as the NIC stand-in).
# Idempotent: installs nothing that is already there. Without root (or without apt-get) it
# says what is missing and exits 0, so the suites that need DPDK skip with their own message.
set -eu

say() { printf 'install-dpdk: %s\n' "$*"; }

# The packages to ask apt for, in the order found missing.
need=""
if command -v dpdk-testpmd >/dev/null 2>&1; then
  say "dpdk-testpmd present: $(command -v dpdk-testpmd)"
else
  need="$need dpdk-dev"
fi
if command -v stdbuf >/dev/null 2>&1; then
  say "stdbuf present: $(command -v stdbuf)"
else
  need="$need coreutils"
fi

# sbin may not be on PATH for a non-login shell.
have_ip() { command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ]; }
if have_ip; then
  say "ip present"
else
  need="$need iproute2"
fi

if [ -z "$need" ]; then
  say "nothing to do"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  say "missing:$need; not root, so not installing (run: sudo $0). Tests that need DPDK will skip."
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  say "missing:$need; no apt-get on this system, install DPDK 22.11 testpmd by hand. Tests that need DPDK will skip."
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
say "apt-get update"
apt-get update -q
say "apt-get install -y$need"
# shellcheck disable=SC2086 # word splitting of the package list is intended
apt-get install -y -q --no-install-recommends $need

for tool in dpdk-testpmd stdbuf; do
  if command -v "$tool" >/dev/null 2>&1; then
    say "installed: $tool -> $(command -v "$tool")"
  else
    say "still missing after install: $tool"
    exit 1
  fi
done
if ! have_ip; then
  say "still missing after install: ip"
  exit 1
fi
