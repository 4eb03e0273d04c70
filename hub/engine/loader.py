"""Importing the modules that define workflows, so their definitions register.

Explicit on purpose: the hub runs the workflows of the modules it is told about
(``HUB_MODULES``, default the project's ``workflows`` package), nothing found by magic.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from hub.errors import HubError


def load_modules(names: list[str]) -> list[ModuleType]:
    """Import each module; for a package, every module inside it too."""
    loaded: list[ModuleType] = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise HubError(f"cannot import workflow module {name!r} (HUB_MODULES): {exc}") from exc
        loaded.append(module)
        path = getattr(module, "__path__", None)
        if path is not None:
            for info in sorted(pkgutil.walk_packages(path, prefix=f"{name}."),
                               key=lambda i: i.name):
                loaded.append(importlib.import_module(info.name))
    return loaded
