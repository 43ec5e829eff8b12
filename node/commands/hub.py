"""``printnode hub serve | keygen | provision NODE | submit FILE | status | cancel JOB``: the reference hub."""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from node.commands.common import print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("hub", help="the reference hub: serve, keys, provisioning, jobs, fleet status")
    parser.add_argument("--dir", dest="hub_dir", type=Path, default=Path("hub"),
                        help="hub directory: key, ledger, files (default ./hub)")
    parser.add_argument("--ledger", default=None, metavar="PATH|URL",
                        help="the ledger: a SQLite file (default <dir>/ledger.sqlite) or a postgresql:// URL, which"
                             " several `hub serve` workers can share (also $PRINTNODE_HUB_LEDGER)")
    sub = parser.add_subparsers(dest="hub_command", metavar="SUBCOMMAND", required=True)

    serve = sub.add_parser("serve", help="run the hub against a broker")
    _broker_args(serve)
    serve.add_argument("--share-group", default=None, metavar="GROUP",
                       help="run as one of several workers: subscribe as $share/GROUP/... (MQTT v5) and share the"
                            " --ledger (PostgreSQL); each worker needs its own --client-id (default: host and pid)")
    serve.add_argument("--forecast", default="open-meteo", choices=["open-meteo", "none"],
                       help="where the hub gets each node's cloud-cover forecast (default open-meteo: free, no key;"
                            " none: nodes plan on their own forecast)")
    serve.add_argument("--forecast-url", default=None, metavar="URL",
                       help="the provider's base URL (a mirror or a local server; default its public one)")
    serve.add_argument("--forecast-every-h", type=float, default=3.0, metavar="H",
                       help="send each online node a new forecast this often (default 3 h)")
    serve.set_defaults(func=cmd_serve)

    keygen = sub.add_parser("keygen", help="create the hub's Ed25519 signing key (or rotate it)")
    keygen.add_argument("--rotate", action="store_true",
                        help="make a new key and announce it to every known node, signed by the old one")
    keygen.set_defaults(func=cmd_keygen)

    prov = sub.add_parser("provision", help="register a node; print its [node] and [sync] config")
    prov.add_argument("node")
    prov.add_argument("--broker-host", default="localhost")
    prov.add_argument("--broker-port", type=int, default=None)
    prov.add_argument("--passwd-file", type=Path, default=None,
                      help="Mosquitto password file to add the node's user to (runs mosquitto_passwd)")
    prov.add_argument("--ca-cert", type=Path, default=None, help="with --ca-key: issue a client certificate")
    prov.add_argument("--ca-key", type=Path, default=None)
    prov.add_argument("--out-dir", type=Path, default=None, help="where the node's certificate goes")
    prov.set_defaults(func=cmd_provision)

    submit = sub.add_parser("submit", help="queue a G-code file for a node or for the fleet")
    submit.add_argument("file", type=Path)
    submit.add_argument("--node", default=None, help="a named node (default: the dispatcher chooses)")
    submit.add_argument("--name", default=None)
    submit.add_argument("--priority", type=int, default=0)
    submit.add_argument("--expires-h", type=float, default=24 * 7, help="the node must take it within (hours)")
    submit.add_argument("--material", default=None)
    submit.add_argument("--nozzle-mm", type=float, default=None)
    submit.add_argument("--min-volume-mm", default=None, metavar="X,Y,Z")
    submit.add_argument("--max-hotend-c", type=float, default=None)
    submit.add_argument("--max-bed-c", type=float, default=None)
    submit.add_argument("--energy-wh", type=float, default=None)
    submit.set_defaults(func=cmd_submit)

    status = sub.add_parser("status", help="the fleet as a table (or --json)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    cancel = sub.add_parser("cancel", help="cancel a job (a signed command to its node; hub cancel wins)")
    cancel.add_argument("job")
    cancel.set_defaults(func=cmd_cancel)


def _broker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker-host", default="localhost")
    parser.add_argument("--broker-port", type=int, default=1883)
    parser.add_argument("--protocol", choices=["5", "3.1.1"], default="5")
    parser.add_argument("--username", default=None)
    parser.add_argument("--password", default=None)
    parser.add_argument("--ca", type=Path, default=None, help="CA file (turns TLS on)")
    parser.add_argument("--cert", type=Path, default=None)
    parser.add_argument("--key", type=Path, default=None)
    parser.add_argument("--client-id", default=None,
                        help="MQTT client id (default printnode-hub; with --share-group printnode-hub-<host>-<pid>)")


def _ledger_location(args: argparse.Namespace) -> str | Path:
    from node.hub.server import hub_paths

    return args.ledger or os.environ.get("PRINTNODE_HUB_LEDGER") or hub_paths(args.hub_dir)[1]


def _ledger(args: argparse.Namespace):  # noqa: ANN202
    from node.hub.backends import open_ledger

    return open_ledger(_ledger_location(args))


def cmd_serve(args: argparse.Namespace) -> int:
    from node.hub.server import Hub, hub_paths
    from node.sync.mqtt import BrokerSettings

    if not hub_paths(args.hub_dir)[0].exists():
        print(f"printnode hub: no key in {args.hub_dir}; run `printnode hub keygen` first", file=sys.stderr)
        return 2
    client_id = args.client_id or ("printnode-hub" if args.share_group is None
                                   else f"printnode-hub-{socket.gethostname()}-{os.getpid()}")
    from node.hub.forecasts import make_provider

    try:
        provider = make_provider(args.forecast, args.forecast_url)
        hub = Hub(args.hub_dir, BrokerSettings(
            host=args.broker_host, port=args.broker_port, protocol=args.protocol, client_id=client_id,
            username=args.username, password=args.password, ca_file=args.ca, cert_file=args.cert,
            key_file=args.key), ledger=_ledger_location(args), share_group=args.share_group,
            forecast_provider=provider, forecast_interval_s=args.forecast_every_h * 3600.0)
    except ValueError as exc:
        print(f"printnode hub: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    hub.start()
    group = f", worker {client_id} of group {args.share_group}" if args.share_group else ""
    forecast = f", forecasts from {provider.name} every {args.forecast_every_h:g} h" if provider else ", no forecasts"
    print(f"hub: serving {args.broker_host}:{args.broker_port}, key {hub.key.key_id}, ledger {hub.ledger.dialect}"
          f"{group}{forecast}", flush=True)
    done.wait()
    hub.stop()
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from node.hub.server import announce_key, hub_paths
    from node.sync.signing import SigningKey

    key_path = hub_paths(args.hub_dir)[0]
    if key_path.exists() and not args.rotate:
        key = SigningKey.load(key_path)
        print(f"printnode hub: {key_path} exists (public key {key.public_hex}); use --rotate", file=sys.stderr)
        return 1
    new = SigningKey.generate()
    if args.rotate:
        if not key_path.exists():
            print("printnode hub: nothing to rotate; run keygen first", file=sys.stderr)
            return 2
        old = SigningKey.load(key_path)
        shutil.copy2(key_path, key_path.with_name(f"hub.{old.key_id}.key.old"))
        count = announce_key(_ledger(args), old, new)
        print(f"announced key {new.key_id} to {count} node(s), signed by {old.key_id}")
    new.save(key_path)
    print(new.public_hex)
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    import tomli_w

    from node.hub.server import hub_paths
    from node.sync.protocol import NODE_ID_PATTERN
    from node.sync.signing import SigningKey

    if not re.match(NODE_ID_PATTERN, args.node):
        print(f"printnode hub: {args.node!r} is not a node id ({NODE_ID_PATTERN})", file=sys.stderr)
        return 2
    key_path = hub_paths(args.hub_dir)[0]
    if not key_path.exists():
        print("printnode hub: run `printnode hub keygen` first", file=sys.stderr)
        return 2
    hub_key = SigningKey.load(key_path)
    sync: dict[str, object] = {"broker_host": args.broker_host, "hub_public_keys": [hub_key.public_hex]}
    if args.ca_cert and args.ca_key:
        from node.hub.certs import issue_cert, write_pair

        out_dir = args.out_dir or args.hub_dir / "nodes" / args.node
        key_pem, cert_pem = issue_cert(args.ca_key.read_bytes(), args.ca_cert.read_bytes(), args.node)
        key_file, cert_file = write_pair(out_dir, args.node, key_pem, cert_pem)
        sync.update(broker_port=args.broker_port or 8883, tls_ca_file=str(args.ca_cert),
                    tls_cert_file=str(cert_file), tls_key_file=str(key_file))
    else:
        password = secrets.token_urlsafe(24)
        sync.update(broker_port=args.broker_port or 1883, username=args.node, password=password)
        if args.passwd_file is not None:
            tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
            flags = ["-b"] if args.passwd_file.exists() else ["-c", "-b"]
            subprocess.run([tool, *flags, str(args.passwd_file), args.node, password], check=True)
    with _ledger(args).tx() as conn:
        conn.execute("INSERT INTO nodes(node_id) VALUES(?) ON CONFLICT DO NOTHING", (args.node,))
        conn.execute("UPDATE nodes SET provisioned_s = ? WHERE node_id = ?", (time.time(), args.node))
    sys.stdout.write(tomli_w.dumps({"node": {"id": args.node}, "sync": sync}))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from node.hub.server import hub_paths, submit_job
    from node.sync.protocol import PrinterRequirements

    if not args.file.is_file():
        print(f"printnode hub: {args.file}: no such file", file=sys.stderr)
        return 2
    volume = None
    if args.min_volume_mm:
        try:
            x, y, z = (float(v) for v in args.min_volume_mm.split(","))
        except ValueError:
            print("printnode hub: --min-volume-mm wants X,Y,Z in mm", file=sys.stderr)
            return 2
        volume = (x, y, z)
    req = PrinterRequirements(min_build_volume_mm=volume, nozzle_mm=args.nozzle_mm, material=args.material,
                              max_hotend_c=args.max_hotend_c, max_bed_c=args.max_bed_c)
    job_id = submit_job(_ledger(args), hub_paths(args.hub_dir)[2], args.file, name=args.name, node_id=args.node,
                        requirements=req, priority=args.priority, expires_s=time.time() + args.expires_h * 3600,
                        energy_wh=args.energy_wh)
    print(job_id)
    return 0


def _ago(t_s: float | None) -> str:
    if t_s is None:
        return "never"
    return datetime.fromtimestamp(t_s, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_status(args: argparse.Namespace) -> int:
    from node.hub.server import fleet_status

    rows = fleet_status(_ledger(args))
    if args.json:
        print_json(rows)
        return 0
    header = f"{'NODE':<20} {'ONLINE':<7} {'SOC %':>6} {'PV W':>7} {'QUEUE':>5}  {'CURRENT JOB':<14} {'LAST SEEN':<21}"
    print(header)
    for r in rows:
        soc = "-" if r["soc_pct"] is None else f"{r['soc_pct']:.0f}"
        pv = "-" if r["pv_w"] is None else f"{r['pv_w']:.0f}"
        print(f"{r['node_id']:<20} {'yes' if r['online'] else 'no':<7} {soc:>6} {pv:>7} {r['queue']:>5}  "
              f"{(r['current_job'] or '-'):<14} {_ago(r['last_seen_s']):<21}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from node.hub.server import cancel_job

    try:
        job_id, how = cancel_job(_ledger(args), args.job)
    except (KeyError, ValueError) as exc:
        print(f"printnode hub: {exc.args[0]}", file=sys.stderr)
        return 1
    print(json.dumps({"job_id": job_id, "result": how}))
    return 0
