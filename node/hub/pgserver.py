"""A throwaway PostgreSQL server from the distribution's binaries: ``initdb`` in a directory, one free port.

For the tests, ``bench/fleet.py`` and trying the hub's PostgreSQL ledger without touching the
machine's own server: the cluster lives in its own directory, listens on 127.0.0.1 only (no Unix
socket), trusts local connections and is gone when the directory is.  Debian keeps the binaries in
``/usr/lib/postgresql/<version>/bin`` (not on PATH); PostgreSQL refuses to run as root, so under
root the cluster runs as the ``postgres`` system user the package creates.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

USER = "printnode"


def postgres_bindir() -> Path | None:
    """Where ``initdb`` and ``postgres`` are: PATH first, else the newest /usr/lib/postgresql/<v>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(candidates[-1]).parent if candidates else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TempPostgres:
    """``start()`` initialises (once) and runs the cluster; ``url(db)``; ``create_database``; ``stop()``.

    ``durable=False`` turns fsync off: right for tests (the data dies with them), wrong for a
    benchmark of what an ack promises, which keeps the defaults.
    """

    def __init__(self, directory: Path | None = None, port: int | None = None, durable: bool = True,
                 settings: dict[str, str] | None = None) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise FileNotFoundError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bindir = bindir
        self._run_as = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        # under root the data directory must belong to postgres and sit where postgres can reach it
        self.directory = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="printnode-pg-"))
        self.port = port or free_port()
        self.durable = durable
        self.settings = settings or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def datadir(self) -> Path:
        return self.directory / "data"

    def _popen_user(self) -> dict[str, object]:
        if self._run_as is None:
            return {}
        return {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}

    def _own(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)

    def init(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._own(self.directory)
        if (self.datadir / "PG_VERSION").exists():
            return
        subprocess.run([str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", USER, "-A", "trust",
                        "-E", "UTF8", "--no-locale", "--no-sync"],
                       check=True, capture_output=True, **self._popen_user())  # type: ignore[call-overload]

    def start(self, timeout_s: float = 30.0) -> TempPostgres:
        self.init()
        args = [str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "max_connections=200"]
        if not self.durable:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        for key, value in self.settings.items():
            args += ["-c", f"{key}={value}"]
        log = (self.directory / "postgres.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                     **self._popen_user())  # type: ignore[call-overload]
        deadline = time.monotonic() + timeout_s
        import psycopg

        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.proc.returncode}); see {self.directory / 'postgres.log'}")
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open transactions roll back, committed ones stay."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
