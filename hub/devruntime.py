"""Where a running ``hub dev`` put its embedded broker, for the other commands in its folder.

Dev mode starts Kafka on a free port, so a second shell's ``hub dlq list`` or ``hub lag``
could not know where it is. While dev mode runs it keeps ``<data dir>/dev-runtime.json``
(the broker's address, its API and its process id) and removes it at stop; settings read it
when ``HUB_KAFKA_BOOTSTRAP`` is unset, and ``hub settings`` says where the value came from.
A file left by a dev mode that was killed is ignored: its process is gone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

FILE = "dev-runtime.json"


@dataclass(frozen=True)
class DevRuntime:
    kafka_bootstrap: str
    api: str | None
    pid: int
    path: Path

    @property
    def origin(self) -> str:
        return f"the running dev mode (pid {self.pid}, {self.path})"


def publish(data_dir: Path, *, kafka_bootstrap: str, api: str | None) -> Path:
    """Write the file (atomically: a reader never sees half of it)."""
    path = Path(data_dir) / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"kafka_bootstrap": kafka_bootstrap, "api": api,
                               "pid": os.getpid()}))
    tmp.replace(path)
    return path


def withdraw(data_dir: Path) -> None:
    """Remove the file, if it is this process's."""
    found = running(data_dir)
    if found is not None and found.pid == os.getpid():
        found.path.unlink(missing_ok=True)


def running(data_dir: Path) -> DevRuntime | None:
    """The dev mode running from ``data_dir``, if there is one."""
    path = Path(data_dir) / FILE
    try:
        raw = json.loads(path.read_text())
        pid, bootstrap = int(raw["pid"]), str(raw["kafka_bootstrap"])
        api = raw.get("api")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _alive(pid):
        return None
    return DevRuntime(bootstrap, str(api) if api else None, pid, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
