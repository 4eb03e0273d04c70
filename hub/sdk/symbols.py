"""Symbolic values: what a composer holds instead of data.

A composer runs once, before any data exists, so the input and every step's output are
placeholders. Reading a field yields another placeholder; anything that needs the actual value
(``if``, comparisons, arithmetic, ``str``) is a definition-time error that names the fix.
"""

from __future__ import annotations

from typing import Any, NoReturn

from pydantic import BaseModel

from hub.engine.graph import INPUT, Expr, Ref
from hub.errors import DefinitionError


class Symbol:
    """A run-time value seen at definition time; index it or pass it to steps, nothing else."""

    __slots__ = ("_hub_model", "_hub_ref", "_hub_workflow")
    _hub_ref: Ref
    _hub_workflow: str
    _hub_model: type[BaseModel] | None

    def __init__(self, ref: Ref, workflow: str, model: type[BaseModel] | None = None) -> None:
        object.__setattr__(self, "_hub_ref", ref)
        object.__setattr__(self, "_hub_workflow", workflow)
        object.__setattr__(self, "_hub_model", model)

    def __getattr__(self, name: str) -> Symbol:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._child(name)

    def __getitem__(self, key: str | int) -> Symbol:
        if not isinstance(key, str | int):
            raise DefinitionError(
                f"workflow {self._hub_workflow!r}: {self._hub_ref.describe()}[{key!r}]: "
                "only str and int keys can index a run-time value"
            )
        return self._child(key)

    def _child(self, key: str | int) -> Symbol:
        ref: Ref = self._hub_ref
        model = self._hub_model
        sub_model = None
        if model is not None and isinstance(key, str):
            fields = model.model_fields
            if key not in fields:
                raise DefinitionError(
                    f"workflow {self._hub_workflow!r}: {ref.describe()} has no field {key!r} "
                    f"({model.__name__} has: {', '.join(fields) or 'no fields'})"
                )
            ann = fields[key].annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                sub_model = ann
        return Symbol(Ref(ref.source, (*ref.path, key)), self._hub_workflow, sub_model)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        self._misuse(f"assigning .{name}")

    def __repr__(self) -> str:
        return f"<run-time value {self._hub_ref.describe()} of workflow {self._hub_workflow!r}>"

    def _misuse(self, what: str) -> NoReturn:
        raise DefinitionError(
            f"workflow {self._hub_workflow!r}: {what} on {self._hub_ref.describe()}, a value "
            "that exists only when the workflow runs; the composer runs once, at definition "
            "time. Move that logic into transform(...) (to compute a value) or "
            "when(...).then(...) (to run steps conditionally)"
        )

    def __bool__(self) -> NoReturn:
        self._misuse("truth test (if/and/or/not)")

    def __eq__(self, other: object) -> NoReturn:
        self._misuse("comparison ==")

    def __ne__(self, other: object) -> NoReturn:
        self._misuse("comparison !=")

    def __lt__(self, other: object) -> NoReturn:
        self._misuse("comparison <")

    def __le__(self, other: object) -> NoReturn:
        self._misuse("comparison <=")

    def __gt__(self, other: object) -> NoReturn:
        self._misuse("comparison >")

    def __ge__(self, other: object) -> NoReturn:
        self._misuse("comparison >=")

    def __hash__(self) -> NoReturn:
        self._misuse("hashing")

    def __iter__(self) -> NoReturn:
        self._misuse("iteration")

    def __len__(self) -> NoReturn:
        self._misuse("len()")

    def __contains__(self, item: object) -> NoReturn:
        self._misuse("'in'")

    def __str__(self) -> NoReturn:
        self._misuse("str()")

    def __format__(self, spec: str) -> NoReturn:
        self._misuse("formatting (f-string)")

    def __int__(self) -> NoReturn:
        self._misuse("int()")

    def __float__(self) -> NoReturn:
        self._misuse("float()")

    def __index__(self) -> NoReturn:
        self._misuse("use as an index")

    def __add__(self, other: object) -> NoReturn:
        self._misuse("arithmetic +")

    __radd__ = __add__

    def __sub__(self, other: object) -> NoReturn:
        self._misuse("arithmetic -")

    __rsub__ = __sub__

    def __mul__(self, other: object) -> NoReturn:
        self._misuse("arithmetic *")

    __rmul__ = __mul__

    def __truediv__(self, other: object) -> NoReturn:
        self._misuse("arithmetic /")

    __rtruediv__ = __truediv__

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._misuse("a call")


def input_symbol(workflow: str, model: type[BaseModel] | None) -> Symbol:
    return Symbol(Ref(INPUT), workflow, model)


def to_expr(value: Any, workflow: str, where: str) -> Expr:
    """Turn what a composer passes (symbols, constants, models, containers) into an expression."""
    if isinstance(value, Symbol):
        ref: Ref = object.__getattribute__(value, "_hub_ref")
        return ref
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        out: dict[str, Expr] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise DefinitionError(
                    f"workflow {workflow!r}: {where}: dict keys must be str, got {k!r}"
                )
            out[k] = to_expr(v, workflow, where)
        return out
    if isinstance(value, list | tuple):
        return [to_expr(v, workflow, where) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise DefinitionError(
        f"workflow {workflow!r}: {where}: {type(value).__name__} is not a JSON value; pass "
        "run-time values, pydantic models or JSON constants"
    )
