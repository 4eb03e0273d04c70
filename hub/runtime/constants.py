"""Moved to ``hub.wire`` (every wire name in one module); kept so code written before the
move still imports."""

from hub.wire import *  # noqa: F403
