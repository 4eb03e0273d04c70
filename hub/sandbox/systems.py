"""The sandbox systems ``hub sandbox``, ``hub dev`` and the tests run."""

from __future__ import annotations

from hub.sandbox.contentful import ContentfulSandbox
from hub.sandbox.hubspot import HubSpotSandbox
from hub.sandbox.odoo import OdooSandbox
from hub.sandbox.server import SandboxServer
from hub.sandbox.stripe import StripeSandbox
from hub.sandbox.system import SandboxSystem

SYSTEMS: tuple[type[SandboxSystem], ...] = (
    StripeSandbox, OdooSandbox, HubSpotSandbox, ContentfulSandbox)


def all_sandboxes(*, seed: int | None = None, fixed_ports: bool = False,
                  host: str = "127.0.0.1", control_port: int = 0) -> SandboxServer:
    """Every sandbox in one server; ``fixed_ports`` uses each system's ``default_port``."""
    systems = [cls(seed=seed) for cls in SYSTEMS]
    ports = {s.name: s.default_port for s in systems} if fixed_ports else None
    return SandboxServer(systems, host=host, ports=ports, control_port=control_port)
