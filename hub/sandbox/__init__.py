"""Local stand-ins for the outside systems a shop runs (Stripe, Odoo, HubSpot, Contentful).

Each speaks the used subset of the real API on its own loopback port, keeps its state in
memory, shows it at ``/_sandbox/state`` and takes faults at run time. ``hub sandbox`` runs
them on their own; ``hub dev`` and the tests run them beside the hub. Pointing a connector
at the real system instead is configuration only.
"""

from hub.sandbox.client import SandboxControl as SandboxControl
from hub.sandbox.faults import Faults as Faults
from hub.sandbox.server import SandboxServer as SandboxServer
from hub.sandbox.system import SandboxSystem as SandboxSystem

__all__ = ["Faults", "SandboxControl", "SandboxServer", "SandboxSystem"]
