"""Tests for hub.store.embedded: one shared embedded PostgreSQL server per data folder."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import psutil
import pytest

from hub.store.embedded import EmbeddedPostgres, dsn_for_database

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class PgFolder:
    """A fresh data folder under /tmp (short path) plus what to clean up afterwards."""

    data_dir: Path
    socket_dirs: set[Path] = field(default_factory=set)
    children: list[subprocess.Popen[str]] = field(default_factory=list)

    def remember(self, dsn: str) -> str:
        self.socket_dirs.add(Path(parse_qs(urlsplit(dsn).query)["host"][0]))
        return dsn


def server_processes(data_dir: Path) -> list[psutil.Process]:
    """Live postgres processes (postmaster and children) working in ``data_dir``."""
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] != "postgres" or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if Path(proc.cwd()) == data_dir:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def postmasters(data_dir: Path) -> list[psutil.Process]:
    """The server processes of ``data_dir`` whose parent is not one of them."""
    procs = server_processes(data_dir)
    pids = {p.pid for p in procs}
    return [p for p in procs if p.ppid() not in pids]


def alive(pid: int) -> bool:
    """Running and not a zombie (a killed orphan stays a zombie until pid 1 reaps it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def wait_gone(data_dir: Path, timeout: float = 15.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while (left := server_processes(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.fixture
def pg_folder() -> Iterator[PgFolder]:
    base = Path(tempfile.mkdtemp(prefix="hubpg", dir="/tmp"))
    folder = PgFolder(base / "d")
    try:
        yield folder
    finally:
        # Never leave a server (or a helper process) behind, whatever the test did.
        for child in folder.children:
            child.kill()
            child.wait(timeout=10)
        for proc in postmasters(folder.data_dir):
            proc.send_signal(signal.SIGQUIT)  # immediate shutdown
        for proc in wait_gone(folder.data_dir, timeout=10):
            proc.kill()
        shutil.rmtree(base, ignore_errors=True)
        for socket_dir in folder.socket_dirs:
            shutil.rmtree(socket_dir, ignore_errors=True)


async def _query(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def query(dsn: str, sql: str) -> object:
    """First column of the first row of one statement."""
    return asyncio.run(_query(dsn, sql))


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def execute(dsn: str, sql: str) -> None:
    """Run one or more statements."""
    asyncio.run(_execute(dsn, sql))


def test_dsn_for_database() -> None:
    dsn = "postgresql://postgres@/postgres?host=/tmp/hub-pg-ab12cd&port=5432"
    assert dsn_for_database(dsn, "hub_test") == (
        "postgresql://postgres@/hub_test?host=/tmp/hub-pg-ab12cd&port=5432"
    )
    with pytest.raises(ValueError):
        dsn_for_database(dsn, "")


def test_start_gives_a_working_dsn(pg_folder: PgFolder) -> None:
    with EmbeddedPostgres(pg_folder.data_dir) as pg:
        dsn = pg_folder.remember(pg.dsn)
        assert dsn.startswith("postgresql://postgres@/postgres?host=/tmp/hub-pg-")
        assert query(dsn, "SHOW fsync") == "on"
        assert query(dsn, "SHOW synchronous_commit") == "on"
        assert query(dsn, "SHOW listen_addresses") == ""
        assert query(dsn, "SHOW max_connections") == "300"
        assert query(dsn, "CREATE EXTENSION pg_stat_statements") is None
        assert query(dsn, "SELECT count(*) >= 0 FROM pg_stat_statements") is True
        query(dsn, "CREATE DATABASE other")
        assert query(dsn_for_database(dsn, "other"), "SELECT current_database()") == "other"
    assert server_processes(pg_folder.data_dir) == []


def test_settings_override_defaults(pg_folder: PgFolder) -> None:
    with EmbeddedPostgres(pg_folder.data_dir, settings={"max_connections": "50"}) as pg:
        pg_folder.remember(pg.dsn)
        assert query(pg.dsn, "SHOW max_connections") == "50"


def test_second_instance_reuses_server_until_both_stop(pg_folder: PgFolder) -> None:
    first = EmbeddedPostgres(pg_folder.data_dir)
    second = EmbeddedPostgres(pg_folder.data_dir)
    dsn = pg_folder.remember(first.start())
    pid = postmaster_pid(pg_folder.data_dir)
    try:
        assert second.start() == dsn
        assert postmaster_pid(pg_folder.data_dir) == pid

        first.stop()
        assert alive(pid)
        assert query(second.dsn, "SELECT 1") == 1
    finally:
        second.stop()
    assert wait_gone(pg_folder.data_dir) == []
    assert not (pg_folder.data_dir / "postmaster.pid").exists()


def test_stop_server_and_start_server_keep_holders(pg_folder: PgFolder) -> None:
    with EmbeddedPostgres(pg_folder.data_dir) as pg:
        pg_folder.remember(pg.dsn)
        pg.stop_server()
        assert wait_gone(pg_folder.data_dir) == []
        pg.start_server()
        assert query(pg.dsn, "SELECT 1") == 1
    assert wait_gone(pg_folder.data_dir) == []


def test_restart_keeps_data(pg_folder: PgFolder) -> None:
    with EmbeddedPostgres(pg_folder.data_dir) as pg:
        dsn = pg_folder.remember(pg.dsn)
        execute(dsn, "CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
        before = postmaster_pid(pg_folder.data_dir)
        pg.restart()
        assert pg.dsn == dsn
        assert postmaster_pid(pg_folder.data_dir) != before
        assert query(dsn, "SELECT x FROM t") == 42
    assert wait_gone(pg_folder.data_dir) == []


def test_start_after_postmaster_was_killed(pg_folder: PgFolder) -> None:
    """A stale postmaster.pid (server SIGKILLed) does not prevent the next start."""
    pg = EmbeddedPostgres(pg_folder.data_dir)
    dsn = pg_folder.remember(pg.start())
    execute(dsn, "CREATE TABLE t (x int); INSERT INTO t VALUES (7)")
    os.kill(postmaster_pid(pg_folder.data_dir), signal.SIGKILL)
    assert wait_gone(pg_folder.data_dir) == []
    assert (pg_folder.data_dir / "postmaster.pid").exists()

    again = EmbeddedPostgres(pg_folder.data_dir)
    try:
        assert again.start() == dsn
        assert query(dsn, "SELECT x FROM t") == 7
    finally:
        again.stop()
        pg.stop()
    assert wait_gone(pg_folder.data_dir) == []


# structlog's default logger prints to stdout, which the test reads: log to stderr instead.
_QUIET_LOGS = """
import sys
import structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
"""

_HOLD_SCRIPT = (
    _QUIET_LOGS
    + """
import sys, time
from pathlib import Path
from hub.store.embedded import EmbeddedPostgres
print(EmbeddedPostgres(Path(sys.argv[1])).start(), flush=True)
time.sleep(600)
"""
)


def _spawn_holder(folder: PgFolder) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_SCRIPT, str(folder.data_dir)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    folder.children.append(proc)
    assert proc.stdout is not None
    dsn = proc.stdout.readline().strip()
    assert dsn.startswith("postgresql://"), "holder subprocess failed to start the server"
    return proc, folder.remember(dsn)


def test_orphan_of_killed_process_is_adopted_and_stopped(pg_folder: PgFolder) -> None:
    proc, dsn = _spawn_holder(pg_folder)
    orphan_pid = postmaster_pid(pg_folder.data_dir)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    # The server outlives the process that started it ...
    assert alive(orphan_pid)
    assert query(dsn, "SELECT 1") == 1

    # ... is reused by the next start (not a second server on the folder) ...
    pg = EmbeddedPostgres(pg_folder.data_dir)
    assert pg.start() == dsn
    assert postmaster_pid(pg_folder.data_dir) == orphan_pid
    # ... and stopped by its stop, the dead holder being pruned.
    pg.stop()
    assert wait_gone(pg_folder.data_dir) == []
    assert not alive(orphan_pid)


def test_live_holder_in_another_process_keeps_server(pg_folder: PgFolder) -> None:
    proc, dsn = _spawn_holder(pg_folder)
    try:
        with EmbeddedPostgres(pg_folder.data_dir) as pg:
            assert pg.dsn == dsn
        # The other process still holds it.
        assert query(dsn, "SELECT 1") == 1
    finally:
        proc.kill()
        proc.wait(timeout=10)
    EmbeddedPostgres(pg_folder.data_dir).stop()  # prunes the killed holder, stops the server
    assert wait_gone(pg_folder.data_dir) == []


_RACE_SCRIPT = (
    _QUIET_LOGS
    + """
import sys
from pathlib import Path
from hub.store.embedded import EmbeddedPostgres
data_dir = Path(sys.argv[1])
pg = EmbeddedPostgres(data_dir)
dsn = pg.start()
print(int((data_dir / "postmaster.pid").read_text().split()[0]), dsn, flush=True)
sys.stdin.read()
pg.stop()
"""
)


def test_concurrent_starts_share_one_server(pg_folder: PgFolder) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACE_SCRIPT, str(pg_folder.data_dir)],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(4)
    ]
    pg_folder.children.extend(procs)
    pids = set()
    for proc in procs:
        assert proc.stdout is not None
        pid, dsn = proc.stdout.readline().split()
        pids.add(pid)
        pg_folder.remember(dsn)
    assert len(pids) == 1
    assert [str(p.pid) for p in postmasters(pg_folder.data_dir)] == list(pids)
    for proc in procs:
        proc.communicate("", timeout=60)
        assert proc.returncode == 0
    assert wait_gone(pg_folder.data_dir) == []
