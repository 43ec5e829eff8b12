"""``printnode web init | key [--rotate] | password | url | announce``: the web page's credentials, its
address, and its zeroconf announcement.

Run as the node's user (``sudo -u printnode ...`` on a Pi): the credentials file in the state
directory is readable by that user only.  The running daemon re-reads it, so a rotated key or a
new password acts at once.
"""
from __future__ import annotations

import argparse
import getpass
import sys

from node.commands.common import add_config_arguments, config_from_args, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("web", help="the web page: API key, password, address")
    sub = parser.add_subparsers(dest="web_command", metavar="ACTION", required=True)
    init = sub.add_parser("init", help="create the API key and the page password (the installer runs it)")
    add_config_arguments(init)
    init.add_argument("--force", action="store_true", help="replace existing credentials (the old key stops working)")
    init.add_argument("--password-stdin", action="store_true", help="read the password from standard input "
                                                                    "(default: a random one, printed once)")
    init.set_defaults(func=cmd_init)
    key = sub.add_parser("key", help="show the API key to paste into a slicer (--rotate: make a new one)")
    add_config_arguments(key)
    key.add_argument("--rotate", action="store_true", help="replace the key: clients with the old one get 403")
    key.add_argument("--json", action="store_true")
    key.set_defaults(func=cmd_key)
    password = sub.add_parser("password", help="set the page's login password")
    add_config_arguments(password)
    password.add_argument("--stdin", action="store_true", help="read it from standard input (scripts)")
    password.set_defaults(func=cmd_password)
    announce = sub.add_parser("announce", help="the avahi service file that announces the page and the "
                                               "OctoPrint-compatible API on the LAN (zeroconf)")
    add_config_arguments(announce)
    announce.add_argument("--write", metavar="PATH", nargs="?", const="/etc/avahi/services/printnode.service",
                          default=None, help="write it there (default path: avahi's services directory) "
                                             "instead of printing it")
    announce.set_defaults(func=cmd_announce)
    url = sub.add_parser("url", help="where the page and the API are (what to type into a slicer)")
    add_config_arguments(url)
    url.set_defaults(func=cmd_url)


def _fail(message: str) -> int:
    print(f"printnode: {message}", file=sys.stderr)
    return 1


def cmd_init(args: argparse.Namespace) -> int:
    from node.web import credentials as creds
    from node.web import sessions

    config = config_from_args(args)
    path = config.web_credentials
    if path.exists() and not args.force:
        print(f"{path} exists already (`printnode web key` shows the key; --force replaces both)")
        return 0
    try:
        given = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
        credentials, password = creds.create(path, given)
        sessions.clear(path)  # logins made with the credentials this replaces
    except creds.CredentialsError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot write {path}: {exc.strerror or exc} (run as the node's user)")
    print(f"API key:       {credentials.api_key}")
    if given is None:
        print(f"page password: {password}   (shown once; `printnode web password` sets another)")
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    from node.web import credentials as creds

    config = config_from_args(args)
    try:
        credentials = creds.rotate_key(config.web_credentials) if args.rotate else creds.load(config.web_credentials)
    except creds.CredentialsError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot write {config.web_credentials}: {exc.strerror or exc} (run as the node's user)")
    if args.json:
        print_json({"api_key": credentials.api_key, "rotated": args.rotate})
    else:
        print(credentials.api_key)
        if args.rotate:
            print("new key in effect: clients with the old one now get 403", file=sys.stderr)
    return 0


def cmd_password(args: argparse.Namespace) -> int:
    from node.web import credentials as creds
    from node.web import sessions

    config = config_from_args(args)
    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("new page password: ")
        if getpass.getpass("again: ") != password:
            return _fail("the two passwords differ; nothing changed")
    try:
        creds.set_password(config.web_credentials, password)
        sessions.clear(config.web_credentials)  # the daemon also refuses logins made with the old password
    except creds.CredentialsError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot write {config.web_credentials}: {exc.strerror or exc} (run as the node's user)")
    print("page password set (logins from now on use it; pages logged in with the old one must log in again)")
    return 0


def cmd_announce(args: argparse.Namespace) -> int:
    from pathlib import Path

    from node.web.announce import NothingToAnnounce, avahi_service_xml

    config = config_from_args(args)
    try:
        text = avahi_service_xml(config.web, config.node.id)
    except NothingToAnnounce as exc:
        return _fail(str(exc))
    if args.write is None:
        sys.stdout.write(text)
        return 0
    target = Path(args.write)
    try:
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(target)  # avahi-daemon sees the whole file or none of it
    except OSError as exc:
        return _fail(f"cannot write {target}: {exc.strerror or exc} (is avahi-daemon installed? run as root)")
    print(f"wrote {target}: avahi-daemon announces the page and the OctoPrint-compatible API on port "
          f"{config.web.port}")
    return 0


def cmd_url(args: argparse.Namespace) -> int:
    from node.controlclient import ControlClient, ControlError

    config = config_from_args(args)
    if not config.web.enabled:
        return _fail("the web page is off ([web] enabled = false)")
    try:
        report = ControlClient(config.control_socket, timeout_s=10).request({"cmd": "status"})
    except ControlError as exc:
        return _fail(str(exc))
    web = (report or {}).get("components", {}).get("web", {})  # type: ignore[union-attr]
    if web.get("problem"):
        return _fail(web["problem"])
    print(web.get("url"))
    if config.web.bind in ("0.0.0.0", "::"):
        port = str(web.get("url", "")).rstrip("/").rsplit(":", 1)[-1]
        print(f"from another device: {config.web.scheme}://<this machine's address>:{port}/")
    return 0
