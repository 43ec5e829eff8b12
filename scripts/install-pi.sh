#!/usr/bin/env bash
# Install printnode on Raspberry Pi OS (Debian 12 "bookworm" or later) from this checkout.
#
#   sudo scripts/install-pi.sh [--prefix DIR] [--user NAME] [--dry-run]
#
# Creates the service user (groups dialout, gpio, i2c), /etc/printnode and /var/lib/printnode,
# a virtual environment in DIR/.venv with printnode and the RPi.GPIO API (rpi-lgpio on a Pi 5),
# a first /etc/printnode/node.toml, the systemd unit rendered for DIR, the polkit rule that lets
# the service power the Pi off, the journald size cap, and the web page's API key and password
# (printed once); then starts the service and runs
# `printnode doctor` as the service user. Safe to run again (an update keeps node.toml).
# --dry-run prints every step instead of doing it.
set -euo pipefail

PREFIX="$(cd "$(dirname "$0")/.." && pwd)"
SERVICE_USER=printnode
DRY_RUN=0
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX="$(cd "$2" && pwd)"; shift 2 ;;
        --user) SERVICE_USER="$2"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "install-pi.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

case "$PREFIX" in
    /home/*|/root/*|/run/user/*)
        echo "install-pi.sh: $PREFIX is hidden from the service (ProtectHome=yes in the unit);" >&2
        echo "  clone to /opt/printnode instead: sudo git clone ... /opt/printnode" >&2
        exit 2 ;;
esac

CONFIG_DIR=/etc/printnode
STATE_DIR=/var/lib/printnode
VENV="$PREFIX/.venv"
UNIT=/etc/systemd/system/printnode.service

run() {
    if [ "$DRY_RUN" = 1 ]; then
        printf '+ %s\n' "$*"
    else
        "$@"
    fi
}

write_file() {  # write_file PATH MODE < content
    local path="$1" mode="$2"
    if [ "$DRY_RUN" = 1 ]; then
        printf '+ write %s (mode %s):\n' "$path" "$mode"
        sed 's/^/    /'
    else
        install -m "$mode" /dev/stdin "$path"
    fi
}

if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
    echo "install-pi.sh: run as root (sudo), or with --dry-run to see the steps" >&2
    exit 1
fi

EXTRA=pi
if grep -qs "Raspberry Pi 5" /proc/device-tree/model; then
    EXTRA=pi5   # RPi.GPIO does not drive the Pi 5's RP1; rpi-lgpio provides the same API
fi

echo "== packages"
run apt-get install -y --no-install-recommends python3-venv python3-dev build-essential

echo "== user $SERVICE_USER and its groups"
for group in dialout gpio i2c; do
    getent group "$group" >/dev/null || run groupadd --system "$group"
done
if ! id "$SERVICE_USER" >/dev/null 2>&1; then
    run useradd --system --home-dir "$STATE_DIR" --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
fi
run usermod -aG dialout,gpio,i2c "$SERVICE_USER"

echo "== directories"
run install -d -m 0750 -o root -g "$SERVICE_USER" "$CONFIG_DIR"
run install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE_DIR"

echo "== virtual environment in $VENV (printnode[$EXTRA])"
[ -x "$VENV/bin/python" ] || run python3 -m venv "$VENV"
run "$VENV/bin/pip" install --quiet --upgrade pip
run "$VENV/bin/pip" install --quiet -e "${PREFIX}[${EXTRA}]"

echo "== config $CONFIG_DIR/node.toml"
if [ -e "$CONFIG_DIR/node.toml" ]; then
    echo "   kept the existing node.toml"
else
    write_file "$CONFIG_DIR/node.toml" 0640 <<TOML
# printnode on this Pi; every key is described in $PREFIX/config/node.example.toml.
[node]
state_dir = "$STATE_DIR"

[printer]
port = "auto"      # or /dev/serial/by-id/usb-...; \`printnode doctor\` lists what it finds
profile = "ender3"
progress_interval_s = 60.0   # one progress line a minute in the journal

[gpio]
backend = "rpi"
# relay = { pin = 17, active_low = true }
# led = { pin = 27 }
# plate_button = { pin = 22 }
TOML
    run chgrp "$SERVICE_USER" "$CONFIG_DIR/node.toml"
fi

echo "== web page: API key and login password ($STATE_DIR/web-credentials.json)"
if [ -e "$STATE_DIR/web-credentials.json" ]; then
    echo "   kept the existing credentials (printnode web key shows the key)"
else
    # prints the API key (paste it into the slicer) and a random page password, once
    run runuser -u "$SERVICE_USER" -- "$VENV/bin/printnode" web init --config "$CONFIG_DIR/node.toml"
fi

echo "== zeroconf: announce the page and the OctoPrint-compatible API on the LAN (slicers' Browse list)"
if [ -d /etc/avahi/services ]; then
    # avahi-daemon (on Raspberry Pi OS by default) announces service files: nothing resident in the node
    if ANNOUNCE="$("$VENV/bin/printnode" web announce --config "$CONFIG_DIR/node.toml")"; then
        printf '%s\n' "$ANNOUNCE" | write_file /etc/avahi/services/printnode.service 0644
    else
        echo "   not announced (the reason is above); printnode web url still names the page"
    fi
else
    echo "   avahi-daemon is not installed: slicers find the node by its address (apt install avahi-daemon, then re-run)"
fi

echo "== systemd unit $UNIT"
UNIT_TEXT="$("$VENV/bin/python" -c "import sys; from pathlib import Path; from node.field.service import render_unit; \
sys.stdout.write(render_unit(Path(sys.argv[1]), user=sys.argv[2]))" "$VENV" "$SERVICE_USER" 2>/dev/null \
    || sed "s#/opt/printnode/.venv#$VENV#g; s#=printnode\$#=$SERVICE_USER#" "$PREFIX/systemd/printnode.service")"
printf '%s\n' "$UNIT_TEXT" | write_file "$UNIT" 0644
command -v systemd-analyze >/dev/null && run systemd-analyze verify "$UNIT"

echo "== polkit rule (power off without sudo) and journald size cap"
run install -d /etc/polkit-1/rules.d /etc/systemd/journald.conf.d
sed "s/subject.user == \"printnode\"/subject.user == \"$SERVICE_USER\"/" "$PREFIX/systemd/printnode-halt.rules" \
    | write_file /etc/polkit-1/rules.d/50-printnode-halt.rules 0644
write_file /etc/systemd/journald.conf.d/printnode.conf 0644 < "$PREFIX/systemd/journald-printnode.conf"

echo "== start"
run systemctl daemon-reload
run systemctl restart systemd-journald
run systemctl enable --now printnode.service
run runuser -u "$SERVICE_USER" -- "$VENV/bin/printnode" doctor --config "$CONFIG_DIR/node.toml" || true
echo "done: journalctl -u printnode -f shows the log; printnode status --state-dir $STATE_DIR what it does"
