"""``printnode hub serve | keygen | provision NODE | submit FILE | nodes | jobs | job ID | cancel JOB | web``: the
reference hub.

Every listing reads node/hub/fleet.py (the fleet page shows the same); each prints one text style, or JSON
with ``--json``.  Nothing here imports the web stack, paho or pvlib until the command that needs it runs.
"""
from __future__ import annotations

import argparse
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
    serve.add_argument("--web", action="store_true",
                       help="also serve the fleet page (as `printnode hub web` does; --web-port, --web-bind)")
    serve.add_argument("--web-port", type=int, default=None, help="the fleet page's port (default 8090)")
    serve.add_argument("--web-bind", default="0.0.0.0", help="the fleet page's address (default: every interface)")
    _alert_args(serve)
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
    prov.add_argument("--yes", "-y", action="store_true",
                      help="re-provisioning an already provisioned node rotates its broker password: do it without"
                           " asking (the running node is locked out until it gets the new config)")
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
    submit.add_argument("--json", action="store_true")
    submit.set_defaults(func=cmd_submit)

    for name, text in (("nodes", "every node: SoC, PV, battery V, temperatures, current job, queue, next window,"
                                 " last seen, alerts"),
                       ("status", "the same as `hub nodes`")):
        nodes = sub.add_parser(name, help=text)
        nodes.add_argument("--json", action="store_true")
        _alert_args(nodes)
        nodes.set_defaults(func=cmd_nodes)

    jobs = sub.add_parser("jobs", help="the fleet's jobs, newest first (filter by node and state)")
    jobs.add_argument("--node", default=None)
    jobs.add_argument("--state", default=None,
                      help="a state as shown (printing, waiting_energy, unassigned, sent ...) or a wire state"
                           " (queued, in_progress, succeeded, failed, rejected, cancelled, timed_out)")
    jobs.add_argument("--limit", type=int, default=200)
    jobs.add_argument("--json", action="store_true")
    jobs.set_defaults(func=cmd_jobs)

    job = sub.add_parser("job", help="one job: every version with time and reason, and why it waits")
    job.add_argument("job", help="a job id or its first characters")
    job.add_argument("--json", action="store_true")
    job.set_defaults(func=cmd_job)

    cancel = sub.add_parser("cancel", help="cancel a job (a signed command to its node; hub cancel wins)")
    cancel.add_argument("job")
    cancel.add_argument("--json", action="store_true")
    cancel.set_defaults(func=cmd_cancel)

    web = sub.add_parser("web", help="the fleet page (serve; init | key | password: its credentials)")
    web.add_argument("action", nargs="?", default="serve", choices=["serve", "init", "key", "password"],
                     help="serve (default): serve the page; init: create the API key and page password;"
                          " key: show (--rotate: replace) the API key; password: set the page password")
    web.add_argument("--port", type=int, default=None, help="default 8090")
    web.add_argument("--bind", default="0.0.0.0", help="address to listen on (default: every interface)")
    web.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain: serve HTTPS (with --tls-key)")
    web.add_argument("--tls-key", type=Path, default=None)
    web.add_argument("--password-stdin", action="store_true",
                     help="init, password: read the password from standard input (default: init makes one)")
    web.add_argument("--force", action="store_true", help="init: replace existing credentials")
    web.add_argument("--rotate", action="store_true", help="key: make a new key (clients with the old one get 403)")
    _alert_args(web)
    web.set_defaults(func=cmd_web)


def _alert_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--offline-hours", type=float, default=6.0, help="alert: a node silent this long (default 6)")
    parser.add_argument("--low-battery-pct", type=float, default=20.0, help="alert: SoC below this (default 20)")
    parser.add_argument("--stalled-min", type=float, default=30.0,
                        help="alert: a print whose progress stood still this long (default 30)")


def _alert_settings(args: argparse.Namespace):  # noqa: ANN202
    from node.hub.fleet import AlertSettings

    return AlertSettings(offline_after_h=args.offline_hours, low_battery_pct=args.low_battery_pct,
                         stalled_after_min=args.stalled_min)


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
    code = 0
    if args.web:
        code = _serve_page(hub.ledger, args, done, port=args.web_port, bind=args.web_bind)
    done.wait()
    hub.stop()
    return code


def _serve_page(ledger, args: argparse.Namespace, done: threading.Event, port: int | None, bind: str,  # noqa: ANN001
                tls_cert: Path | None = None, tls_key: Path | None = None) -> int:
    """Serve the fleet page until ``done`` (a signal) is set; the page's credentials are made at its first start."""
    import asyncio

    from node.hub.server import hub_paths
    from node.web import credentials as creds
    from node.web.config import WebSection
    from node.web.fleet import DEFAULT_PORT, FleetWebServer, credentials_path

    path = credentials_path(args.hub_dir)
    try:
        config = WebSection(bind=bind, port=DEFAULT_PORT if port is None else port, tls_cert=tls_cert,
                            tls_key=tls_key)
        if not path.exists():
            credentials, password = creds.create(path)
            print(f"fleet page: created {path}; API key {credentials.api_key}; page password (shown once): "
                  f"{password}  (`printnode hub web password` sets another)", flush=True)
    except (ValueError, creds.CredentialsError, OSError) as exc:
        print(f"printnode hub: the fleet page cannot start: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        done.set()
        return 2
    server = FleetWebServer(ledger, hub_paths(args.hub_dir)[2], config, path, _alert_settings(args))

    async def run() -> int:
        try:
            url = await server.start()
        except (creds.CredentialsError, OSError, ValueError) as exc:
            print(f"printnode hub: the fleet page cannot start: {getattr(exc, 'strerror', None) or exc}",
                  file=sys.stderr)
            return 2
        shown = f"{url} (and on this machine's LAN address)" if bind in ("0.0.0.0", "::") else url
        print(f"fleet page: {shown}", flush=True)
        await asyncio.to_thread(done.wait)
        await server.stop()
        return 0

    code = asyncio.run(run())
    done.set()
    return code


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
    ledger = _ledger(args)
    if not (args.ca_cert and args.ca_key) and not _may_rotate_password(ledger, args.node, args.yes):
        return 1
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
    with ledger.tx() as conn:
        conn.execute("INSERT INTO nodes(node_id) VALUES(?) ON CONFLICT DO NOTHING", (args.node,))
        conn.execute("UPDATE nodes SET provisioned_s = ? WHERE node_id = ?", (time.time(), args.node))
    sys.stdout.write(tomli_w.dumps({"node": {"id": args.node}, "sync": sync}))
    return 0


def _may_rotate_password(ledger, node_id: str, yes: bool) -> bool:  # noqa: ANN001
    """A node provisioned before gets a new broker password only when the person says so (--yes or y)."""
    from node.hub.fleet import when_words

    row = ledger.read(lambda c: c.execute("SELECT provisioned_s FROM nodes WHERE node_id = ?", (node_id,)).fetchone())
    if row is None or row["provisioned_s"] is None or yes:
        return True
    what = (f"{node_id} was provisioned at {when_words(row['provisioned_s'])}: provisioning it again issues a new "
            "broker password, and the running node is locked out until it gets the new config")
    if not sys.stdin.isatty():
        print(f"printnode hub: {what}. Nothing changed; run again with --yes to rotate its password.", file=sys.stderr)
        return False
    print(f"{what}. Rotate its password? [y/N] ", end="", file=sys.stderr, flush=True)
    if sys.stdin.readline().strip().lower() in ("y", "yes"):
        return True
    print("nothing changed", file=sys.stderr)
    return False


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
    from node.hub.fleet import submitted_sentence

    ledger = _ledger(args)
    if args.node is not None and ledger.read(lambda c: c.execute(
            "SELECT 1 FROM nodes WHERE node_id = ?", (args.node,)).fetchone()) is None:
        print(f"printnode hub: no node {args.node!r} on this hub (`printnode hub provision {args.node}` registers it;"
              " `printnode hub nodes` lists them)", file=sys.stderr)
        return 2
    try:
        job_id = submit_job(ledger, hub_paths(args.hub_dir)[2], args.file, name=args.name, node_id=args.node,
                            requirements=req, priority=args.priority, expires_s=time.time() + args.expires_h * 3600,
                            energy_wh=args.energy_wh)
    except ValueError as exc:
        print(f"printnode hub: {exc}", file=sys.stderr)
        return 2
    message = submitted_sentence(job_id, args.name or args.file.stem, args.node)
    if args.json:
        print_json({"job_id": job_id, "node_id": args.node, "message": message})
    else:
        print(message)
    return 0


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _temps(now_c: float | None, target_c: float | None) -> str:
    if now_c is None:
        return "-"
    return f"{now_c:.0f}/{target_c:.0f}" if target_c else f"{now_c:.0f}"


def cmd_nodes(args: argparse.Namespace) -> int:
    from node.hub import fleet

    nodes = fleet.list_nodes(_ledger(args), settings=_alert_settings(args))
    if args.json:
        print_json([n.model_dump(mode="json") for n in nodes])
        return 0
    print(f"{'NODE':<16} {'ONLINE':<6} {'SOC %':>5} {'PV W':>6} {'BATT V':>6} {'HOTEND C':>9} {'BED C':>7}  "
          f"{'JOB':<28} {'QUEUE':>5}  {'NEXT WINDOW':<17} {'LAST SEEN':<17}")
    for n in nodes:
        job = "-"
        if n.current_job is not None:
            job = f"{n.current_job_name or n.current_job} {n.current_job_state or ''}" + (
                f" {n.percent:.0f}%" if n.percent is not None else "")
        print(f"{n.node_id:<16} {'yes' if n.online else 'no':<6} {_num(n.soc_pct):>5} {_num(n.pv_w):>6} "
              f"{_num(n.battery_v, 1):>6} {_temps(n.hotend_c, n.hotend_target_c):>9} "
              f"{_temps(n.bed_c, n.bed_target_c):>7}  {job:<28} {n.queue_length:>5}  "
              f"{fleet.when_words(n.next_window_start_s) if n.next_window_start_s else '-':<17} "
              f"{fleet.when_words(n.last_seen_s):<17}")
    alerts = fleet.fleet_alerts(nodes)
    if alerts:
        print("\nALERTS")
        for alert in alerts:
            print(f"  {alert.text}")
    elif not nodes:
        print("(no nodes yet: `printnode hub provision NODE` registers one)")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from node.hub import fleet

    jobs = fleet.list_jobs(_ledger(args), node_id=args.node, state=args.state, limit=args.limit)
    if args.json:
        print_json([j.model_dump(mode="json") for j in jobs])
        return 0
    print(f"{'JOB':<12}  {'NAME':<20} {'NODE':<16} {'STATE':<15} {'%':>4}  {'UPDATED':<17}  REASON")
    for j in jobs:
        node = j.node_id or (f"({j.requested_node})" if j.requested_node else "-")
        print(f"{j.job_id:<12}  {j.name[:20]:<20} {node:<16} {j.state:<15} {_num(j.percent):>4}  "
              f"{fleet.when_words(j.updated_s):<17}  {j.reason}")
    if not jobs:
        print("(no jobs" + (" match" if args.node or args.state else " yet") + ")")
    return 0


def cmd_job(args: argparse.Namespace) -> int:
    from node.hub import fleet

    try:
        job = fleet.job_detail(_ledger(args), args.job)
    except KeyError as exc:
        print(f"printnode hub: {exc.args[0]}", file=sys.stderr)
        return 1
    if args.json:
        print_json(job.model_dump(mode="json"))
        return 0
    node = job.node_id or (f"none yet (asked for {job.requested_node})" if job.requested_node else "none yet")
    rows = [("job", f"{job.job_id} ({job.name})"), ("node", node),
            ("state", job.state + (f", {job.percent:.0f} %" if job.percent is not None else "")),
            ("wire state", f"{job.wire_state} (version {job.version})"),
            ("file", f"{job.file_bytes} bytes, sha256 {job.file_sha256[:16]}…"),
            ("requirements", ", ".join(f"{k} {v}" for k, v in job.requirements.items() if v is not None) or "none"),
            ("submitted", fleet.when_words(job.created_s)), ("expires", fleet.when_words(job.expires_s))]
    if job.waiting:
        rows.append(("waiting", job.waiting))
    for label, value in rows:
        print(f"{label + ':':<14}{value}")
    print("history:" if job.events else "history:      none yet (the node has not reported it)")
    for e in job.events:
        print(f"  v{e.version:<3} {fleet.when_words(e.t_s)}  {e.node_state:<15} {e.reason}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from node.hub.fleet import cancelled_sentence
    from node.hub.server import cancel_job

    try:
        job_id, how = cancel_job(_ledger(args), args.job)
    except (KeyError, ValueError) as exc:
        print(f"printnode hub: {exc.args[0]}", file=sys.stderr)
        return 1
    if args.json:
        print_json({"job_id": job_id, "result": how, "message": cancelled_sentence(job_id, how)})
    else:
        print(cancelled_sentence(job_id, how))
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    from node.web import credentials as creds
    from node.web.fleet import credentials_path

    path = credentials_path(args.hub_dir)
    try:
        if args.action == "serve":
            done = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: done.set())
            return _serve_page(_ledger(args), args, done, port=args.port, bind=args.bind, tls_cert=args.tls_cert,
                               tls_key=args.tls_key)
        if args.action == "init":
            if path.exists() and not args.force:
                print(f"{path} exists already (`printnode hub web key` shows the key; --force replaces both)")
                return 0
            given = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
            credentials, password = creds.create(path, given)
            print(f"API key:       {credentials.api_key}")
            if given is None:
                print(f"page password: {password}   (shown once; `printnode hub web password` sets another)")
            return 0
        if not path.exists():
            print(f"printnode hub: {path} does not exist: `printnode hub web init` creates it (or the page's "
                  "first start)", file=sys.stderr)
            return 1
        if args.action == "key":
            print((creds.rotate_key(path) if args.rotate else creds.load(path)).api_key)
            return 0
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            import getpass

            password = getpass.getpass("new page password: ")
            if getpass.getpass("again: ") != password:
                print("printnode hub: the two passwords differ; nothing changed", file=sys.stderr)
                return 1
        creds.set_password(path, password)
        print("page password set (logins from now on use it)")
        return 0
    except creds.CredentialsError as exc:
        print(f"printnode hub: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"printnode hub: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
