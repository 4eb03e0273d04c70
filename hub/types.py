"""Shared type aliases."""

from __future__ import annotations

from typing import Any, TypeAlias

JSON: TypeAlias = Any
"""A value that ``json.dumps`` accepts: dict, list, str, int, float, bool or None."""

ExecutionId: TypeAlias = str
"""The primary key of an execution (a UUID in text form)."""

TransactionId: TypeAlias = str
"""The caller's key for an execution; unique per workflow, so a second start finds the first."""

