#!/usr/bin/env bash
# Installs the Debian packages the tests run for real: Prometheus and promtool
# (prometheus), Alertmanager and amtool (prometheus-alertmanager).
# Where apt-get is missing or not ours to run, the tests that need them skip with a
# reason (or fail, with KEEL_TEST_REQUIRE_SERVICES=1 as .ci/run sets it).
set -u
packages=()
command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
command -v amtool >/dev/null 2>&1 || packages+=(prometheus-alertmanager)
[ ${#packages[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "test-packages: no apt-get here; tests that need ${packages[*]} will skip" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    echo "test-packages: not root; tests that need ${packages[*]} will skip" >&2
    exit 0
  fi
fi
echo "Installing ${packages[*]} from Debian's packages for the tests..."
export DEBIAN_FRONTEND=noninteractive
# The packages' own services are not started (there is no init system to start them);
# the tests start Prometheus themselves, on ports of their own.
$sudo apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null 2>&1 \
  || { $sudo apt-get update -q >/dev/null 2>&1 \
       && $sudo apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null; } \
  || echo "test-packages: could not install ${packages[*]}; the tests that need them will skip" >&2
exit 0
