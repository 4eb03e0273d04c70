"""Real Apache Kafka (4.x, KRaft) for conformance tests, from Maven Central jars and the local Java.

Why: the hub runs on Tansu in development (``hub.runtime.tansu``), but what it must work with in
production is Apache Kafka. There is no Kafka distribution to download here, only package
registries, so this module writes a tiny ``pom.xml`` naming ``org.apache.kafka:kafka_2.13`` and
``kafka-tools``, lets the machine's Maven copy the jars once into ``.hub/kafka-<version>/lib``
(gitignored, reused by every later run) and starts a combined broker+controller with
``java -cp 'lib/*' kafka.Kafka server.properties`` on free loopback ports, with its data in a folder
the caller chooses, so ``restart()`` keeps what was written. With ``sasl_scram=True`` a second
listener speaks SASL_PLAINTEXT with SCRAM-SHA-256 and SCRAM-SHA-512 for :data:`SCRAM_USER`, whose
credentials are written into the metadata log when the storage is formatted.

Like Tansu, the JVM gets ``PR_SET_PDEATHSIG`` so that it dies with the process that started it, even
when that one is SIGKILLed.

    python -m tests.support.apache_kafka --prefetch      # download the jars (CI cache warm-up)
    python -m tests.support.apache_kafka --run [--sasl-scram]   # a broker until Ctrl-C
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import structlog

from hub.logging import configure_logging
from hub.runtime.tansu import (
    LOOPBACK,
    free_port,
    parent_death_preexec,
    stop_process,
    wait_until_ready,
)

log = structlog.get_logger(__name__)

ROOT = Path(__file__).resolve().parents[2]
CACHE_ROOT = ROOT / ".hub"

DEFAULT_VERSION = "4.1.1"
#: slf4j 2 + the log4j2 binding, so the broker's logs reach ``server.log`` (the kafka jars alone
#: resolve slf4j-api 1.7 through scala-logging and no binding at all: the broker would log nothing).
SLF4J_VERSION = "2.0.17"
LOG4J_VERSION = "2.24.3"  # what kafka-server 4.1.x depends on
DEPENDENCY_PLUGIN_VERSION = "3.8.1"

SCRAM_USER = "hub"
SCRAM_PASSWORD = "hub-secret"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")

STORAGE_TOOL_CLASSES = ("org.apache.kafka.tools.StorageTool", "kafka.tools.StorageTool")
CONSOLE_PRODUCER_CLASSES = ("org.apache.kafka.tools.ConsoleProducer", "kafka.tools.ConsoleProducer")
BROKER_CLASS = "kafka.Kafka"

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<!-- written by tests/support/apache_kafka.py: the jars an Apache Kafka broker needs -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.hub</groupId>
  <artifactId>apache-kafka-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    {deps}
  </dependencies>
  <build>
    <pluginManagement>
      <plugins>
        <plugin>
          <groupId>org.apache.maven.plugins</groupId>
          <artifactId>maven-dependency-plugin</artifactId>
          <version>{plugin}</version>
        </plugin>
      </plugins>
    </pluginManagement>
  </build>
</project>
"""

_DEP = (
    "<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
    "<version>{v}</version></dependency>"
)

_BROKER_LOG4J = """\
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
"""

_TOOLS_LOG4J = """\
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
"""


def missing_tools() -> list[str]:
    """Which of ``java`` and ``mvn`` are not on PATH (tests skip on a machine without them)."""
    return [tool for tool in ("java", "mvn") if shutil.which(tool) is None]


def cache_dir(version: str = DEFAULT_VERSION, root: Path = CACHE_ROOT) -> Path:
    return root / f"kafka-{version}"


def _lib_ready(lib: Path, version: str) -> bool:
    return (lib / f"kafka_2.13-{version}.jar").is_file()


def prefetch(version: str = DEFAULT_VERSION, root: Path = CACHE_ROOT) -> Path:
    """Make sure the jars of Kafka ``version`` are in ``<root>/kafka-<version>/lib``; returns it.

    Runs Maven only when ``lib`` is not populated yet. Maven writes into ``lib.partial`` which is
    renamed at the end, and a file lock serialises concurrent callers, so an interrupted download
    never leaves a half-filled ``lib`` behind.
    """
    home = cache_dir(version, root)
    lib = home / "lib"
    if _lib_ready(lib, version):
        return lib
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _lib_ready(lib, version):
            return lib
        if shutil.which("mvn") is None:
            raise RuntimeError("mvn is not on PATH: cannot resolve the Apache Kafka jars")
        deps = [
            ("org.apache.kafka", "kafka_2.13", version),
            ("org.apache.kafka", "kafka-tools", version),
            ("org.slf4j", "slf4j-api", SLF4J_VERSION),
            ("org.apache.logging.log4j", "log4j-api", LOG4J_VERSION),
            ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
            ("org.apache.logging.log4j", "log4j-slf4j2-impl", LOG4J_VERSION),
        ]
        (home / "pom.xml").write_text(
            _POM.format(
                version=version,
                plugin=DEPENDENCY_PLUGIN_VERSION,
                deps="\n    ".join(_DEP.format(g=g, a=a, v=v) for g, a, v in deps),
            )
        )
        partial = home / "lib.partial"
        shutil.rmtree(partial, ignore_errors=True)
        started = time.monotonic()
        log.info("kafka_jars_resolving", version=version, folder=str(home))
        result = subprocess.run(
            [
                "mvn", "-q", "-B",
                "dependency:copy-dependencies",
                "-DoutputDirectory=lib.partial",
                "-DincludeScope=runtime",
            ],
            cwd=home,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not _lib_ready(partial, version):
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
            raise RuntimeError(f"mvn could not resolve Apache Kafka {version}:\n{tail}")
        shutil.rmtree(lib, ignore_errors=True)
        partial.rename(lib)
        log.info(
            "kafka_jars_resolved",
            version=version,
            jars=len(list(lib.glob("*.jar"))),
            elapsed_s=round(time.monotonic() - started, 1),
        )
    return lib


def find_main_class(lib: Path, candidates: Sequence[str]) -> str:
    """The first of ``candidates`` that one of the Kafka jars in ``lib`` contains.

    Kafka moved its tools from Scala (``kafka.tools.*``, in ``kafka_2.13``) to Java
    (``org.apache.kafka.tools.*``, in ``kafka-tools``) over several releases; 4.1 has
    ``kafka.tools.StorageTool`` and ``org.apache.kafka.tools.ConsoleProducer``.
    """
    wanted = {name.replace(".", "/") + ".class": name for name in candidates}
    found: set[str] = set()
    for jar in sorted(lib.glob("kafka*.jar")):
        with zipfile.ZipFile(jar) as z:
            found.update(wanted[n] for n in z.namelist() if n in wanted)
    for name in candidates:
        if name in found:
            return name
    raise RuntimeError(f"none of {list(candidates)} in the Kafka jars of {lib}")


def new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID as URL-safe base64 without padding (22 characters).

    It may start with '-': pass it as ``--cluster-id=<id>`` so argparse does not take it
    for an option (one start in 64 failed that way)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def _tail(path: Path, lines: int = 60) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class ApacheKafka:
    """One Apache Kafka node (KRaft, broker+controller) on loopback ports, data in ``data_dir``.

    ``start()`` returns the PLAINTEXT bootstrap once a metadata request succeeds (and, with
    ``sasl_scram``, once a SCRAM login on ``sasl_bootstrap`` does too). ``restart()`` keeps the
    data and the ports. Broker output goes to ``data_dir/server.log``.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        version: str = DEFAULT_VERSION,
        sasl_scram: bool = False,
        heap: str = "512m",
        startup_timeout: float = 120.0,
        stop_timeout: float = 30.0,
        extra_properties: Mapping[str, str] | None = None,
        cache_root: Path = CACHE_ROOT,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.version = version
        self.sasl_scram = sasl_scram
        self.heap = heap
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_properties = dict(extra_properties or {})
        self.cache_root = cache_root
        self._ports: dict[str, int] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._lib: Path | None = None
        self._main_classes: dict[str, str] = {}
        self.last_start_s: float | None = None

    # --- paths and commands ---------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def properties_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "kraft-logs"

    @property
    def lib(self) -> Path:
        if self._lib is None:
            self._lib = prefetch(self.version, self.cache_root)
        return self._lib

    def main_class(self, kind: str) -> str:
        """The main class of ``"storage"``, ``"console-producer"`` or ``"broker"`` here."""
        if kind == "broker":
            return BROKER_CLASS
        if kind not in self._main_classes:
            candidates = {
                "storage": STORAGE_TOOL_CLASSES,
                "console-producer": CONSOLE_PRODUCER_CLASSES,
            }[kind]
            self._main_classes[kind] = find_main_class(self.lib, candidates)
        return self._main_classes[kind]

    def java_cmd(self, main_class: str, *args: str, heap: str | None = None,
                 log4j: Path | None = None) -> list[str]:
        """``java -cp 'lib/*' MAIN ARGS`` with a heap cap and a log4j2 configuration."""
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("java is not on PATH: cannot run Apache Kafka")
        config = log4j if log4j is not None else self._tools_log4j()
        return [
            java,
            f"-Xmx{heap or self.heap}",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={config}",
            "-cp", f"{self.lib}/*",
            main_class,
            *args,
        ]

    def console_producer_cmd(self, topic: str, *extra: str) -> list[str]:
        """The console producer for ``topic`` on the PLAINTEXT listener: pipe lines into its stdin.

        ``extra`` is passed on, e.g. ``"--property", "parse.key=true"``.
        """
        return self.java_cmd(
            self.main_class("console-producer"),
            "--bootstrap-server", self.bootstrap,
            "--topic", topic,
            *extra,
            heap="256m",
        )

    def _tools_log4j(self) -> Path:
        path = cache_dir(self.version, self.cache_root) / "tools-log4j2.properties"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_TOOLS_LOG4J)
        return path

    # --- addresses ------------------------------------------------------------------------------

    def _port(self, name: str) -> int:
        if self._ports is None or self._proc is None:
            raise RuntimeError("ApacheKafka is not running")
        return self._ports[name]

    @property
    def bootstrap(self) -> str:
        """PLAINTEXT listener, ``127.0.0.1:PORT``."""
        return f"{LOOPBACK}:{self._port('plain')}"

    @property
    def sasl_bootstrap(self) -> str:
        """SASL_PLAINTEXT (SCRAM-SHA-256/512) listener; only with ``sasl_scram=True``."""
        if not self.sasl_scram:
            raise RuntimeError("this broker was created without sasl_scram=True")
        return f"{LOOPBACK}:{self._port('sasl')}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        """Whether the broker's JVM is running."""
        return self._proc is not None and self._proc.poll() is None

    def scram_client_kwargs(self, mechanism: str = "SCRAM-SHA-256",
                            password: str = SCRAM_PASSWORD) -> dict[str, Any]:
        """aiokafka client arguments for the SASL listener."""
        return {
            "bootstrap_servers": self.sasl_bootstrap,
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": mechanism,
            "sasl_plain_username": SCRAM_USER,
            "sasl_plain_password": password,
        }

    # --- configuration --------------------------------------------------------------------------

    def _properties(self, ports: Mapping[str, int]) -> dict[str, str]:
        listeners = [
            f"PLAINTEXT://{LOOPBACK}:{ports['plain']}",
            f"CONTROLLER://{LOOPBACK}:{ports['controller']}",
        ]
        advertised = [f"PLAINTEXT://{LOOPBACK}:{ports['plain']}"]
        protocols = ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT"]
        if self.sasl_scram:
            listeners.append(f"SASL_PLAINTEXT://{LOOPBACK}:{ports['sasl']}")
            advertised.append(f"SASL_PLAINTEXT://{LOOPBACK}:{ports['sasl']}")
            protocols.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            # A static voter set: the controller's address is not written into the metadata log,
            # so the configuration can change between restarts.
            "controller.quorum.voters": f"1@{LOOPBACK}:{ports['controller']}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "listener.security.protocol.map": ",".join(protocols),
            "log.dirs": str(self.log_dirs),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
        }
        if self.sasl_scram:
            props["sasl.enabled.mechanisms"] = ",".join(SCRAM_MECHANISMS)
            for mechanism in SCRAM_MECHANISMS:
                props[f"listener.name.sasl_plaintext.{mechanism.lower()}.sasl.jaas.config"] = (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                )
        props.update(self.extra_properties)
        return props

    def _write_config(self, ports: Mapping[str, int]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        body = "".join(f"{k}={v}\n" for k, v in self._properties(ports).items())
        self.properties_path.write_text(body)
        (self.data_dir / "log4j2.properties").write_text(_BROKER_LOG4J)

    def _formatted(self) -> bool:
        return (self.log_dirs / "meta.properties").is_file()

    def _format(self) -> None:
        args = ["format", f"--cluster-id={new_cluster_id()}", "--config", str(self.properties_path)]
        if self.sasl_scram:
            for mechanism in SCRAM_MECHANISMS:
                args += [
                    "--add-scram",
                    f"{mechanism}=[name={SCRAM_USER},password={SCRAM_PASSWORD}]",
                ]
        cmd = self.java_cmd(self.main_class("storage"), *args)
        started = time.monotonic()
        result = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
            preexec_fn=parent_death_preexec(), timeout=120,
        )
        if result.returncode != 0:
            output = result.stdout + result.stderr
            raise RuntimeError(f"kafka storage format failed ({result.returncode}):\n{output}")
        log.info("kafka_storage_formatted", data_dir=str(self.data_dir),
                 elapsed_s=round(time.monotonic() - started, 2))

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> str:
        """Start the broker (formatting the storage the first time); returns the bootstrap.

        Raises ``RuntimeError`` with the tail of ``server.log`` when the JVM exits or the broker
        is not ready within ``startup_timeout``.
        """
        if self._proc is not None:
            return self.bootstrap
        self.lib  # noqa: B018 - resolve the jars before the start clock runs
        fixed = self._ports is not None
        attempts = 1 if fixed else 3
        for attempt in range(1, attempts + 1):
            ports = self._ports or {
                name: free_port() for name in ("plain", "controller", "sasl")
            }
            try:
                return self._start_once(ports)
            except RuntimeError:
                if attempt == attempts or "Address already in use" not in _tail(self.log_path):
                    raise
                log.warning("kafka_port_taken_retrying", attempt=attempt)
        raise AssertionError("unreachable")

    def _start_once(self, ports: dict[str, int]) -> str:
        self._write_config(ports)
        if not self._formatted():
            self._format()
        started = time.monotonic()
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _discard
        log_file.write(f"\n===== start at {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n".encode())
        log_file.flush()
        cmd = self.java_cmd(
            BROKER_CLASS, str(self.properties_path), log4j=self.data_dir / "log4j2.properties"
        )
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            start_new_session=True,
            preexec_fn=parent_death_preexec(),
        )
        self._proc, self._log_file, self._ports = proc, log_file, ports
        log.info("kafka_starting", pid=proc.pid, version=self.version, ports=ports)
        deadline = started + self.startup_timeout
        try:
            wait_until_ready(
                self.bootstrap, deadline=deadline, alive=lambda: proc.poll() is None,
                describe=lambda: f"{self.log_path}:\n{_tail(self.log_path)}",
            )
            if self.sasl_scram:
                kwargs = self.scram_client_kwargs()
                wait_until_ready(
                    kwargs.pop("bootstrap_servers"), deadline=deadline,
                    alive=lambda: proc.poll() is None,
                    describe=lambda: f"{self.log_path}:\n{_tail(self.log_path)}",
                    **kwargs,
                )
        except BaseException:
            self._discard()
            raise
        self.last_start_s = round(time.monotonic() - started, 2)
        log.info("kafka_started", bootstrap=self.bootstrap, pid=proc.pid,
                 elapsed_s=self.last_start_s)
        return self.bootstrap

    def _discard(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            rc = stop_process(proc, self.stop_timeout)
            log.info("kafka_stopped", pid=proc.pid, returncode=rc)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self) -> None:
        """SIGTERM (controlled shutdown), SIGKILL after ``stop_timeout``. Idempotent."""
        if self._proc is None:
            return
        log.info("kafka_stopping", pid=self._proc.pid)
        self._discard()

    def restart(self) -> str:
        """Stop and start again on the same ports and data: what was written survives."""
        self.stop()
        return self.start()

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


@contextlib.contextmanager
def running(data_dir: Path | None = None, **kwargs: Any) -> Iterator[ApacheKafka]:
    """An :class:`ApacheKafka` in ``data_dir`` (a temporary folder when ``None``) while inside."""
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kafka-")))
        yield stack.enter_context(ApacheKafka(data_dir, **kwargs))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.apache_kafka",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--prefetch", action="store_true",
                        help="resolve the broker's jars into .hub/kafka-<version>/lib and exit")
    action.add_argument("--run", action="store_true",
                        help="start a broker, print its bootstrap address, stop on Ctrl-C")
    parser.add_argument("--version", default=DEFAULT_VERSION, help="Kafka version")
    parser.add_argument("--data-dir", type=Path, help="broker data (default: a temporary folder)")
    parser.add_argument("--sasl-scram", action="store_true",
                        help=f"add a SASL_PLAINTEXT SCRAM listener (user {SCRAM_USER})")
    args = parser.parse_args(argv)
    configure_logging()  # structlog to stderr: stdout carries the addresses

    if args.prefetch:
        started = time.monotonic()
        lib = prefetch(args.version)
        print(f"{lib} ({len(list(lib.glob('*.jar')))} jars, {time.monotonic() - started:.1f}s)")
        return 0

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with running(args.data_dir, version=args.version, sasl_scram=args.sasl_scram) as kafka:
        print(f"bootstrap {kafka.bootstrap}", flush=True)
        if args.sasl_scram:
            print(f"sasl_bootstrap {kafka.sasl_bootstrap} user={SCRAM_USER} "
                  f"password={SCRAM_PASSWORD} mechanisms={','.join(SCRAM_MECHANISMS)}", flush=True)
        print(f"log {kafka.log_path}", flush=True)
        while not stop.wait(1.0):
            if not kafka.alive:
                print("broker exited", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
