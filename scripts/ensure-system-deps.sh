#!/usr/bin/env bash
# Install what `make` needs from the distribution's packages, only if it is missing.
#   build: Python >= 3.11 with venv and headers, a C compiler (for the Cython cores)
#   test:  also the Mosquitto broker (the MQTT tests start their own on a free port) and its clients
#          (mosquitto_sub: the sync tests read the retained state topics the way people do), PostgreSQL,
#          curl (the slicer-style uploads: PrusaSlicer uploads with libcurl) and headless Chromium with its
#          driver (the web page's browser tests drive the distribution's build through selenium)
#   marlin: socat (bench/marlin.py puts the firmware's stdin/stdout on a pseudo-terminal with it)
set -euo pipefail
what=${1:-build}
missing=()

python3 - <<'PY' || { echo "printnode needs Python >= 3.11 (Debian 12 / Raspberry Pi OS bookworm or newer)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
python3 -c 'import sysconfig, os, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' \
  || missing+=(python3-dev)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
if [ "$what" = test ]; then
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
  command -v mosquitto_sub >/dev/null 2>&1 || missing+=(mosquitto-clients)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
  # the hub's ledger tests start their own PostgreSQL (initdb in a temp dir, a free port); Debian keeps the
  # binaries in /usr/lib/postgresql/<version>/bin, off PATH
  command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
fi

if [ "$what" = marlin ]; then
  command -v socat >/dev/null 2>&1 || missing+=(socat)
  command -v stdbuf >/dev/null 2>&1 || missing+=(coreutils)
fi

[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing from the distribution's packages: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
