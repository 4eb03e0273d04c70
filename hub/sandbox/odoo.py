"""``OdooSandbox``: an Odoo 19 database in memory, reached over JSON-2 and over JSON-RPC.

The ERP connector speaks either protocol; both are served here over one database
(``hub-sandbox``) and one user (``admin``, uid 2, whose password and API key are both
``API_KEY``), so a test can run every operation on both and compare.

Subset served, faithful to Odoo 19 where the hub depends on it:

- ``POST /json/2/<model>/<method>``: ``Authorization: bearer <API key>``, optional
  ``X-Odoo-Database``; a JSON object of named arguments (``ids``, ``context`` and the
  method's parameters) in, the method's return value out. Errors are 4xx/5xx with Odoo's
  error object ``{"name", "message", "arguments", "context", "debug"}``: a bad key 401
  ``werkzeug.exceptions.Unauthorized``; an unknown model or method 404; bad arguments 422
  ``UnprocessableEntity``; ``UserError``/``ValidationError`` 422, ``AccessError`` 403,
  ``MissingError`` 404; a request bug (an unknown field, a bad domain) 500 ``builtins.*``.
- ``POST /jsonrpc`` (deprecated upstream): services ``common`` (``version``, ``login``,
  ``authenticate``: a uid, or ``false`` for bad credentials) and ``object`` (``execute``,
  ``execute_kw``); errors inside HTTP 200 as ``{"error": {"code": 200, "message": "Odoo
  Server Error", "data": {<the error object>}}}``, a bad password ``AccessDenied``.
- ``GET /web/version``.

Models: ``product.product`` (seeded: ``SKU-001``..``SKU-008`` in stock, ``SKU-OOS`` with
none), ``res.partner``, ``sale.order`` (+ ``sale.order.line``), ``stock.picking`` (+
``stock.move``; seeded ``stock.picking.type`` and ``stock.location``), ``account.move`` (+
``account.move.line``). Methods: ``search``, ``search_read``, ``search_count``, ``read``,
``create`` (a ``vals_list``; one2many values as ``[0, 0, vals]``, ``[1, id, vals]``,
``[2, id]``, ``[4, id]``, ``[6, 0, ids]`` commands), ``write``, and the actions
``sale.order.action_confirm|action_cancel``, ``stock.picking.action_confirm|action_assign|
action_cancel``, ``account.move.action_post``. Domains: ``=``, ``!=``, ``in``, ``not in``,
``like``, ``ilike``, ``not like``, ``not ilike``, ``=like``, ``=ilike``, ``<``, ``>``,
``<=``, ``>=``, implicit AND and the prefix operators ``&``, ``|``, ``!``; archived records
are hidden unless the domain names ``active``.

Business rules kept: confirming an order that is not a quotation and posting an entry twice
are ``UserError``s; cancelling a confirmed order without ``disable_cancel_warning`` in the
context returns the ``sale.order.cancel`` wizard's action instead of cancelling (as Odoo
17+ does); ``action_assign`` confirms a draft picking and reserves what is free, partially
if need be; with ``move_type="one"`` a picking is ``assigned`` only once every move is
fully reserved (with ``direct``, as soon as one is); ``action_cancel`` releases the
reservation and is a no-op on a cancelled picking. Stock per product: ``qty_available`` is
on hand, ``free_qty`` is on hand minus reserved, ``virtual_available`` is on hand minus the
demand of open outgoing moves. Writing ``qty_available`` sets the quantity on hand: the
sandbox's shortcut for an inventory adjustment through ``stock.quant``, which is how tests
and demos change stock.

Left out: other models and methods, access rights beyond the one user, multi-company,
taxes and currencies (totals are quantity times price), units of measure, lots, validating
(``done``) pickings, the delivery order ``sale_stock`` makes when an order is confirmed (the
hub reserves stock through its own picking), ``unlink``, dotted paths in domains, and
Odoo's internal retry of serialization failures. Error wording follows Odoo's where known.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from fastapi import APIRouter, FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hub.sandbox.system import SandboxSystem, json_error

DATABASE = "hub-sandbox"
LOGIN = "admin"
ADMIN_UID = 2
API_KEY = "8e4c6a1f2b3d4e5f60718293a4b5c6d7e8f90a1b"
"""The admin's API key, also accepted as its password on JSON-RPC."""

VERSION_INFO: list[Any] = [19, 0, 0, "final", 0, ""]

Record = dict[str, Any]


# --- errors, as Odoo serializes them ---------------------------------------------------


class OdooException(Exception):
    """An exception the way Odoo's RPC layer reports it: ``name`` is the qualified Python
    class name, ``status`` the HTTP status JSON-2 answers with."""

    def __init__(self, name: str, message: str, status: int,
                 arguments: list[Any] | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.status = status
        self.arguments = arguments if arguments is not None else [message]

    def serialize(self) -> dict[str, Any]:
        debug = ("" if self.name == "odoo.exceptions.AccessDenied" else
                 "Traceback (most recent call last):\n  (odoo sandbox)\n"
                 f"{self.name}: {self.message}\n")
        return {"name": self.name, "message": self.message, "arguments": self.arguments,
                "context": {}, "debug": debug}


def user_error(message: str) -> OdooException:
    return OdooException("odoo.exceptions.UserError", message, 422)


def validation_error(message: str) -> OdooException:
    return OdooException("odoo.exceptions.ValidationError", message, 422)


def access_error(message: str) -> OdooException:
    return OdooException("odoo.exceptions.AccessError", message, 403)


def access_denied() -> OdooException:
    return OdooException("odoo.exceptions.AccessDenied", "Access Denied", 403)


def missing_error(model: str, ids: list[int]) -> OdooException:
    return OdooException(
        "odoo.exceptions.MissingError",
        "Record does not exist or has been deleted.\n"
        f"(Record: {model}{tuple(ids)!r}, User: {ADMIN_UID})", 404)


def http_error(kind: str, status: int, description: str) -> OdooException:
    """A werkzeug HTTP exception: its arguments are ``(description, code)``."""
    return OdooException(f"werkzeug.exceptions.{kind}", description, status,
                         [description, status])


def bug(kind: str, message: str) -> OdooException:
    """A Python error from a bad request (unknown field, bad domain): 500 on JSON-2."""
    return OdooException(f"builtins.{kind}", message, 500)


# --- the model registry ------------------------------------------------------------------

Default = Callable[["Orm", Record], Any]
Compute = Callable[["Orm", Record], Any]


@dataclass(frozen=True)
class Field:
    kind: str
    """char, text, float, integer, boolean, selection, datetime, many2one or one2many."""
    label: str
    comodel: str = ""
    inverse: str = ""
    """For a one2many: the many2one on the comodel pointing back."""
    required: bool = False
    default: Any = False
    """A value, or a ``Default`` called with the record being created."""
    selection: tuple[str, ...] = ()
    compute: Compute | None = None


@dataclass(frozen=True)
class Model:
    name: str
    label: str
    fields: dict[str, Field]
    order: str = "id desc"
    actions: frozenset[str] = frozenset()
    natural_key: str = ""
    """The field the hub finds records by; the sandbox counts creates per its value."""
    display: Callable[[Record], str] = field(default=lambda rec: str(rec.get("name") or ""))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _sequence(prefix: str) -> Default:
    return lambda orm, rec: orm.next_name(prefix)


def _product_default(attr: str) -> Default:
    def default(orm: Orm, rec: Record) -> Any:
        product = orm.tables["product.product"].get(rec.get("product_id") or 0)
        if product is None:
            return False
        if attr == "display_name":
            return MODELS["product.product"].display(product)
        return product[attr]
    return default


def _from(parent_field: str, parent_model: str, attr: str) -> Default:
    """Default from the parent record (a move's locations from its picking)."""
    def default(orm: Orm, rec: Record) -> Any:
        parent = orm.tables[parent_model].get(rec.get(parent_field) or 0)
        return parent[attr] if parent is not None else False
    return default


def _subtotal(orm: Orm, rec: Record) -> float:
    qty = rec.get("product_uom_qty", rec.get("quantity")) or 0
    return round(float(qty) * float(rec.get("price_unit") or 0), 2)


def _total(child_model: str, inverse: str) -> Compute:
    def compute(orm: Orm, rec: Record) -> float:
        return round(sum(_subtotal(orm, line)
                         for line in orm.children(child_model, inverse, rec["id"])), 2)
    return compute


def _picking_state(orm: Orm, rec: Record) -> str:
    """Odoo's ``stock.picking._compute_state``, for the states the sandbox knows."""
    states = [m["state"] for m in orm.children("stock.move", "picking_id", rec["id"])]
    if not states or all(s == "draft" for s in states):
        return "draft"
    if all(s == "cancel" for s in states):
        return "cancel"
    live = [s for s in states if s not in ("cancel", "done")]
    if not live:
        return "done"
    if rec["move_type"] == "one":
        return "assigned" if all(s == "assigned" for s in live) else "confirmed"
    return ("assigned" if any(s in ("assigned", "partially_available") for s in live)
            else "confirmed")


def _picking_type_code(orm: Orm, rec: Record) -> Any:
    ptype = orm.tables["stock.picking.type"].get(rec["picking_type_id"] or 0)
    return ptype["code"] if ptype else False


def _picking_name(orm: Orm, rec: Record) -> str:
    ptype = orm.tables["stock.picking.type"].get(rec.get("picking_type_id") or 0)
    return orm.next_name(f"WH/{ptype['sequence_code'] if ptype else 'MISC'}/")


def _product_display(rec: Record) -> str:
    code = rec.get("default_code")
    return f"[{code}] {rec['name']}" if code else str(rec["name"])


def _line_display(rec: Record) -> str:
    return str(rec.get("name") or "")


MODELS: dict[str, Model] = {m.name: m for m in [
    Model("product.product", "Product", {
        "name": Field("char", "Name", required=True),
        "default_code": Field("char", "Internal Reference"),
        "description_sale": Field("text", "Sales Description"),
        "list_price": Field("float", "Sales Price", default=1.0),
        "type": Field("selection", "Product Type", default="consu",
                      selection=("consu", "service", "combo")),
        "is_storable": Field("boolean", "Track Inventory", default=True),
        "sale_ok": Field("boolean", "Can be Sold", default=True),
        "active": Field("boolean", "Active", default=True),
        "qty_available": Field("float", "Quantity On Hand", default=0.0),
        "free_qty": Field("float", "Free To Use Quantity",
                          compute=lambda orm, rec: orm.free_qty(rec["id"])),
        "outgoing_qty": Field("float", "Outgoing",
                              compute=lambda orm, rec: orm.outgoing_qty(rec["id"])),
        "virtual_available": Field(
            "float", "Forecasted Quantity",
            compute=lambda orm, rec: rec["qty_available"] - orm.outgoing_qty(rec["id"])),
    }, order="default_code, id", natural_key="default_code", display=_product_display),
    Model("res.partner", "Contact", {
        "name": Field("char", "Name", required=True),
        "email": Field("char", "Email"),
        "phone": Field("char", "Phone"),
        "is_company": Field("boolean", "Is a Company", default=False),
        "active": Field("boolean", "Active", default=True),
    }, order="name, id", natural_key="email"),
    Model("sale.order", "Sales Order", {
        "name": Field("char", "Order Reference", default=_sequence("S")),
        "partner_id": Field("many2one", "Customer", comodel="res.partner", required=True),
        "client_order_ref": Field("char", "Customer Reference"),
        "origin": Field("char", "Source Document"),
        "state": Field("selection", "Status", default="draft",
                       selection=("draft", "sent", "sale", "cancel")),
        "locked": Field("boolean", "Locked", default=False),
        "date_order": Field("datetime", "Order Date", default=lambda orm, rec: _now()),
        "order_line": Field("one2many", "Order Lines", comodel="sale.order.line",
                            inverse="order_id"),
        "amount_untaxed": Field("float", "Untaxed Amount",
                                compute=_total("sale.order.line", "order_id")),
        "amount_total": Field("float", "Total", compute=_total("sale.order.line", "order_id")),
    }, actions=frozenset({"action_confirm", "action_cancel"}), natural_key="client_order_ref"),
    Model("sale.order.line", "Sales Order Line", {
        "order_id": Field("many2one", "Order Reference", comodel="sale.order", required=True),
        "product_id": Field("many2one", "Product", comodel="product.product", required=True),
        "name": Field("text", "Description", default=_product_default("display_name")),
        "product_uom_qty": Field("float", "Quantity", default=1.0),
        "price_unit": Field("float", "Unit Price", default=_product_default("list_price")),
        "price_subtotal": Field("float", "Subtotal", compute=_subtotal),
    }, order="order_id, id", display=_line_display),
    Model("stock.location", "Inventory Locations", {
        "name": Field("char", "Location Name", required=True),
        "complete_name": Field("char", "Full Location Name"),
        "usage": Field("selection", "Location Type", default="internal",
                       selection=("supplier", "view", "internal", "customer", "inventory")),
    }, order="complete_name, id", display=lambda rec: str(rec["complete_name"])),
    Model("stock.picking.type", "Picking Type", {
        "name": Field("char", "Operation Type", required=True),
        "code": Field("selection", "Type of Operation", required=True,
                      selection=("incoming", "outgoing", "internal")),
        "sequence_code": Field("char", "Sequence Prefix", required=True),
        "default_location_src_id": Field("many2one", "Default Source Location",
                                         comodel="stock.location"),
        "default_location_dest_id": Field("many2one", "Default Destination Location",
                                          comodel="stock.location"),
    }, order="id", display=lambda rec: f"WH: {rec['name']}"),
    Model("stock.picking", "Transfer", {
        "picking_type_id": Field("many2one", "Operation Type", comodel="stock.picking.type",
                                 required=True),
        "name": Field("char", "Reference", default=_picking_name),
        "origin": Field("char", "Source Document"),
        "partner_id": Field("many2one", "Contact", comodel="res.partner"),
        "location_id": Field("many2one", "Source Location", comodel="stock.location",
                             required=True, default=_from(
                                 "picking_type_id", "stock.picking.type",
                                 "default_location_src_id")),
        "location_dest_id": Field("many2one", "Destination Location", comodel="stock.location",
                                  required=True, default=_from(
                                      "picking_type_id", "stock.picking.type",
                                      "default_location_dest_id")),
        "move_type": Field("selection", "Shipping Policy", default="direct",
                           selection=("direct", "one")),
        "scheduled_date": Field("datetime", "Scheduled Date", default=lambda orm, rec: _now()),
        "picking_type_code": Field("selection", "Type of Operation",
                                   selection=("incoming", "outgoing", "internal"),
                                   compute=_picking_type_code),
        "state": Field("selection", "Status",
                       selection=("draft", "waiting", "confirmed", "assigned", "done",
                                  "cancel"), compute=_picking_state),
        "move_ids": Field("one2many", "Stock Moves", comodel="stock.move",
                          inverse="picking_id"),
    }, actions=frozenset({"action_confirm", "action_assign", "action_cancel"}),
        natural_key="origin"),
    Model("stock.move", "Stock Move", {
        "picking_id": Field("many2one", "Transfer", comodel="stock.picking"),
        "product_id": Field("many2one", "Product", comodel="product.product", required=True),
        "name": Field("char", "Description", default=_product_default("display_name")),
        "product_uom_qty": Field("float", "Demand", default=1.0),
        "quantity": Field("float", "Quantity", default=0.0),
        "state": Field("selection", "Status", default="draft",
                       selection=("draft", "waiting", "confirmed", "partially_available",
                                  "assigned", "done", "cancel")),
        "origin": Field("char", "Source Document",
                        default=_from("picking_id", "stock.picking", "origin")),
        "location_id": Field("many2one", "Source Location", comodel="stock.location",
                             required=True,
                             default=_from("picking_id", "stock.picking", "location_id")),
        "location_dest_id": Field("many2one", "Destination Location", comodel="stock.location",
                                  required=True, default=_from(
                                      "picking_id", "stock.picking", "location_dest_id")),
    }, order="id"),
    Model("account.move", "Journal Entry", {
        "name": Field("char", "Number", default="/"),
        "move_type": Field("selection", "Type", default="entry",
                           selection=("entry", "out_invoice", "out_refund", "in_invoice",
                                      "in_refund")),
        "partner_id": Field("many2one", "Partner", comodel="res.partner"),
        "ref": Field("char", "Reference"),
        "narration": Field("text", "Terms and Conditions"),
        "state": Field("selection", "Status", default="draft",
                       selection=("draft", "posted", "cancel")),
        "invoice_date": Field("datetime", "Invoice/Bill Date"),
        "invoice_line_ids": Field("one2many", "Invoice lines", comodel="account.move.line",
                                  inverse="move_id"),
        "amount_untaxed": Field("float", "Untaxed Amount",
                                compute=_total("account.move.line", "move_id")),
        "amount_total": Field("float", "Total", compute=_total("account.move.line", "move_id")),
    }, actions=frozenset({"action_post"}), natural_key="ref"),
    Model("account.move.line", "Journal Item", {
        "move_id": Field("many2one", "Journal Entry", comodel="account.move", required=True),
        "product_id": Field("many2one", "Product", comodel="product.product"),
        "name": Field("char", "Label", default=_product_default("display_name")),
        "quantity": Field("float", "Quantity", default=1.0),
        "price_unit": Field("float", "Unit Price", default=_product_default("list_price")),
        "price_subtotal": Field("float", "Subtotal", compute=_subtotal),
    }, order="move_id, id", display=_line_display),
]}

_MAGIC = ("id", "display_name", "create_date", "write_date")


def _field(model: Model, name: str) -> Field | None:
    if name == "id":
        return Field("integer", "ID")
    if name == "display_name":
        return Field("char", "Display Name", compute=lambda orm, rec: model.display(rec))
    if name in ("create_date", "write_date"):
        return Field("datetime", "Created on" if name == "create_date" else "Last Updated on")
    return model.fields.get(name)


# --- domains ---------------------------------------------------------------------------

Predicate = Callable[[Record], bool]

_OPERATORS = frozenset({"=", "!=", "in", "not in", "like", "ilike", "not like", "not ilike",
                        "=like", "=ilike", "<", ">", "<=", ">="})


def _like(pattern: str, *, anchored: bool, ci: bool) -> re.Pattern[str]:
    """SQL LIKE as a regex: ``%`` any run, ``_`` one character, ``\\`` escapes the next one;
    ``like``/``ilike`` match anywhere (Odoo wraps the value in ``%``), ``=like`` the whole."""
    parts, chars = [], iter(pattern)
    for ch in chars:
        if ch == "\\":
            parts.append(re.escape(next(chars, "\\")))
        else:
            parts.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
    body = "".join(parts) if anchored else f".*{''.join(parts)}.*"
    return re.compile(body, (re.IGNORECASE | re.DOTALL) if ci else re.DOTALL)


def _null(value: Any) -> bool:
    """Odoo's empty value (``False``, or ``None`` from JSON); ``0`` and ``0.0`` are values."""
    return value is None or value is False


def _eq(a: Any, b: Any) -> bool:
    return (_null(a) and _null(b)) or (not _null(a) and not _null(b) and a == b)


def _compare(op: str, actual: Any, value: Any) -> bool:
    if op in ("=", "!="):
        return _eq(actual, value) == (op == "=")
    if op in ("in", "not in"):
        return any(_eq(actual, v) for v in value) == (op == "in")
    if op in ("like", "ilike", "not like", "not ilike", "=like", "=ilike"):
        negate = op.startswith("not")
        if _null(actual):
            return negate
        pattern = _like(str(value), anchored=op.startswith("="), ci="ilike" in op)
        return bool(pattern.fullmatch(str(actual))) != negate
    if _null(actual) or _null(value):
        return False
    try:
        if op == "<":
            return bool(actual < value)
        if op == ">":
            return bool(actual > value)
        if op == "<=":
            return bool(actual <= value)
        return bool(actual >= value)
    except TypeError:
        return False


# --- the in-memory ORM -------------------------------------------------------------------


class Orm:
    """The records of every model and the subset of the ORM and business methods served.

    All of it is synchronous and runs on the sandbox's one event loop, so each call is
    atomic, as one Odoo transaction would be.
    """

    def __init__(self) -> None:
        self.tables: dict[str, dict[int, Record]] = {name: {} for name in MODELS}
        self._next_id: Counter[str] = Counter()
        self._sequences: Counter[str] = Counter()
        self.creates: dict[str, Counter[str]] = {}
        self.calls: Counter[str] = Counter()
        _seed(self)

    # --- records ------------------------------------------------------------------------

    def next_name(self, prefix: str) -> str:
        self._sequences[prefix] += 1
        return f"{prefix}{self._sequences[prefix]:05d}"

    def children(self, model: str, inverse: str, parent_id: int) -> list[Record]:
        return [r for r in self.tables[model].values() if r.get(inverse) == parent_id]

    def browse(self, model: str, ids: list[int]) -> list[Record]:
        table = self.tables[model]
        missing = [i for i in ids if i not in table]
        if missing:
            raise missing_error(model, missing)
        return [table[i] for i in ids]

    def value(self, model: Model, rec: Record, name: str) -> Any:
        """A field as ``read`` returns it: many2one ``[id, display_name]``, one2many ids."""
        f = _field(model, name)
        if f is None:
            raise bug("ValueError", f"Invalid field {name!r} on model {model.name!r}")
        if name == "id":
            return rec["id"]
        if f.compute is not None:
            return f.compute(self, rec)
        if f.kind == "one2many":
            return sorted(r["id"] for r in self.children(f.comodel, f.inverse, rec["id"]))
        raw = rec.get(name, False)
        if f.kind == "many2one" and raw:
            target = self.tables[f.comodel][raw]
            return [raw, MODELS[f.comodel].display(target)]
        return raw

    def _raw(self, model: Model, rec: Record, name: str) -> Any:
        """A field as a domain or an order compares it: many2one by id."""
        f = model.fields.get(name)
        if f is not None and f.kind == "many2one":
            return rec.get(name, False)
        return self.value(model, rec, name)

    # --- search -------------------------------------------------------------------------

    def compile(self, model: Model, domain: Any) -> Predicate:
        """A domain (prefix ``&``, ``|``, ``!``; implicit AND at the top) as a predicate."""
        if not isinstance(domain, list):
            raise bug("ValueError", f"Invalid domain: {domain!r}")
        position = 0

        def term() -> Predicate:
            nonlocal position
            if position >= len(domain):
                raise bug("ValueError", f"Invalid domain: {domain!r}")
            token = domain[position]
            position += 1
            if token in ("&", "|"):
                left, right = term(), term()
                if token == "&":
                    return lambda rec: left(rec) and right(rec)
                return lambda rec: left(rec) or right(rec)
            if token == "!":
                inner = term()
                return lambda rec: not inner(rec)
            return self._leaf(model, token)

        predicates: list[Predicate] = []
        while position < len(domain):
            predicates.append(term())
        return lambda rec: all(p(rec) for p in predicates)

    def _leaf(self, model: Model, leaf: Any) -> Predicate:
        if not (isinstance(leaf, list | tuple) and len(leaf) == 3
                and isinstance(leaf[0], str) and leaf[1] in _OPERATORS):
            raise bug("ValueError", f"Invalid leaf {leaf!r}")
        name, op, value = leaf
        f = _field(model, name)
        if f is None:
            raise bug("ValueError", f"Invalid field {model.name}.{name} in leaf {leaf!r}")
        if op in ("in", "not in") and not isinstance(value, list):
            value = [value]
        if f.kind == "one2many":
            if op not in ("=", "!=", "in", "not in"):
                raise bug("ValueError", f"Invalid leaf {leaf!r}: the sandbox compares "
                                        "one2many fields with =, !=, in and not in only")
            wanted = set(value) if isinstance(value, list) else {value}
            negate = op in ("!=", "not in")
            return lambda rec: bool(wanted & set(self.value(model, rec, name))) != negate
        if f.kind == "many2one" and (isinstance(value, str) or op.endswith("like")):
            def by_name(rec: Record) -> bool:
                target = self.value(model, rec, name)
                return _compare(op, target[1] if target else False, value)
            return by_name
        return lambda rec: _compare(op, self._raw(model, rec, name), value)

    def search(self, model_name: str, domain: Any, *, offset: Any = 0, limit: Any = None,
               order: Any = None, context: dict[str, Any] | None = None) -> list[int]:
        model = MODELS[model_name]
        predicate = self.compile(model, domain)
        if ("active" in model.fields and (context or {}).get("active_test", True)
                and not any(isinstance(t, list | tuple) and t and t[0] == "active"
                            for t in domain)):
            test = predicate
            predicate = lambda rec: bool(rec.get("active")) and test(rec)  # noqa: E731
        records = [r for r in self.tables[model_name].values() if predicate(r)]
        records = self._sort(model, records, order or model.order)
        if not isinstance(offset, int) or (limit is not None and not isinstance(limit, int)):
            raise bug("TypeError", "offset and limit must be integers")
        end = None if limit is None else offset + limit
        return [r["id"] for r in records[offset:end]]

    def _sort(self, model: Model, records: list[Record], order: Any) -> list[Record]:
        if not isinstance(order, str):
            raise bug("ValueError", f"Invalid order: {order!r}")
        keys = []
        for part in order.split(","):
            words = part.split()
            if not words or len(words) > 2 or (len(words) == 2
                                               and words[1].lower() not in ("asc", "desc")):
                raise bug("ValueError", f"Invalid order: {order!r}")
            if _field(model, words[0]) is None:
                raise bug("ValueError", f"Invalid field {words[0]!r} on model {model.name!r}")
            keys.append((words[0], len(words) == 2 and words[1].lower() == "desc"))
        for name, desc in reversed(keys):
            def key(rec: Record, name: str = name) -> tuple[bool, Any]:
                value = self._raw(model, rec, name)
                return (_null(value), 0 if _null(value) else value)
            records = sorted(records, key=key, reverse=desc)
        return records

    def read(self, model_name: str, ids: list[int], fields: Any = None) -> list[Record]:
        model = MODELS[model_name]
        names = fields or [*_MAGIC, *model.fields]
        if not isinstance(names, list):
            raise bug("TypeError", f"fields must be a list, not {type(names).__name__}")
        for name in names:
            if _field(model, name) is None:
                raise bug("ValueError", f"Invalid field {name!r} on model {model_name!r}")
        return [{"id": rec["id"], **{n: self.value(model, rec, n) for n in names if n != "id"}}
                for rec in self.browse(model_name, ids)]

    # --- create and write ---------------------------------------------------------------

    def create(self, model_name: str, vals_list: Any) -> list[int]:
        if not isinstance(vals_list, list):
            vals_list = [vals_list]
        return [self._create_one(model_name, vals, count=True) for vals in vals_list]

    def _create_one(self, model_name: str, vals: Any, *, count: bool = False) -> int:
        model = MODELS[model_name]
        if not isinstance(vals, dict):
            raise bug("TypeError", f"values of {model_name} must be an object, got {vals!r}")
        stored, commands = self._convert(model, vals)
        self._next_id[model_name] += 1
        rec: Record = {"id": self._next_id[model_name], "create_date": _now(),
                       "write_date": _now()}
        rec.update(stored)
        for name, f in model.fields.items():
            if f.compute is None and f.kind != "one2many" and name not in rec:
                rec[name] = f.default(self, rec) if callable(f.default) else f.default
        self._check(model, rec)
        self.tables[model_name][rec["id"]] = rec
        self._apply_commands(model, rec, commands)
        if count and model.natural_key:
            key = rec.get(model.natural_key) or f"#{rec['id']}"
            self.creates.setdefault(model_name, Counter())[str(key)] += 1
        return int(rec["id"])

    def write(self, model_name: str, ids: list[int], vals: Any) -> bool:
        model = MODELS[model_name]
        if not isinstance(vals, dict):
            raise bug("TypeError", f"values of {model_name} must be an object, got {vals!r}")
        records = self.browse(model_name, ids)
        stored, commands = self._convert(model, vals)
        for rec in records:
            rec.update(stored)
            rec["write_date"] = _now()
            self._check(model, rec)
            self._apply_commands(model, rec, commands)
        return True

    def _convert(self, model: Model, vals: dict[str, Any],
                 ) -> tuple[dict[str, Any], dict[str, list[Any]]]:
        """Check and split ``vals`` into stored values and one2many commands.

        Computed fields are skipped, as Odoo skips fields it cannot write; except
        ``qty_available``, stored here (see the module docstring)."""
        stored: dict[str, Any] = {}
        commands: dict[str, list[Any]] = {}
        for name, value in vals.items():
            f = model.fields.get(name)
            if f is None or name in _MAGIC:
                raise bug("ValueError", f"Invalid field {name!r} on model {model.name!r}")
            if f.compute is not None:
                continue
            if f.kind == "one2many":
                if not isinstance(value, list):
                    raise bug("ValueError", f"Wrong value for {model.name}.{name}: {value!r}")
                commands[name] = value
                continue
            stored[name] = self._typed(model, name, f, value)
        return stored, commands

    def _typed(self, model: Model, name: str, f: Field, value: Any) -> Any:
        wrong = bug("ValueError", f"Wrong value for {model.name}.{name}: {value!r}")
        if _null(value) and f.kind != "boolean":
            return False
        if f.kind == "many2one":
            if not isinstance(value, int) or isinstance(value, bool):
                raise wrong
            if value not in self.tables[f.comodel]:
                raise validation_error(
                    "The operation cannot be completed:\n"
                    "- Create/update: a mandatory field is not set.\n"
                    "- Delete: another model requires the record being deleted. If possible, "
                    f"archive it instead.\n\nModel: {model.label} ({model.name})\n"
                    f"Field: {f.label} ({name})")
            return value
        if f.kind == "selection" and value not in f.selection:
            raise wrong
        if f.kind in ("float", "integer") and (isinstance(value, bool)
                                               or not isinstance(value, int | float)):
            raise wrong
        if f.kind in ("char", "text", "datetime") and not isinstance(value, str):
            raise wrong
        if f.kind == "boolean":
            return bool(value)
        return float(value) if f.kind == "float" else value

    def _check(self, model: Model, rec: Record) -> None:
        for name, f in model.fields.items():
            if f.required and (_null(rec.get(name)) or rec.get(name) == ""):
                raise validation_error(
                    f"Missing required value for the field '{f.label}' ({name}).\n"
                    f"Model: {model.label} ({model.name})")

    def _apply_commands(self, model: Model, rec: Record, commands: dict[str, list[Any]],
                        ) -> None:
        """one2many commands: 0 create, 1 update, 2 delete, 4 link, 6 replace."""
        for name, cmds in commands.items():
            f = model.fields[name]
            table = self.tables[f.comodel]
            for cmd in cmds:
                if not isinstance(cmd, list | tuple) or not cmd or cmd[0] not in (0, 1, 2, 4, 6):
                    raise bug("ValueError", f"Invalid one2many command for {model.name}.{name}: "
                                            f"{cmd!r} (the sandbox knows 0, 1, 2, 4 and 6)")
                op = cmd[0]
                if op == 0:
                    self._create_one(f.comodel, {**_third(cmd), f.inverse: rec["id"]})
                elif op == 1:
                    self.write(f.comodel, [cmd[1]], _third(cmd))
                elif op == 2:
                    self.browse(f.comodel, [cmd[1]])
                    del table[cmd[1]]
                elif op == 4:
                    self.browse(f.comodel, [cmd[1]])[0][f.inverse] = rec["id"]
                else:
                    ids = _third(cmd) or []
                    for child in self.children(f.comodel, f.inverse, rec["id"]):
                        child[f.inverse] = False
                    for child in self.browse(f.comodel, list(ids)):
                        child[f.inverse] = rec["id"]

    # --- stock --------------------------------------------------------------------------

    def _open_moves(self, product_id: int) -> list[Record]:
        return [m for m in self.tables["stock.move"].values()
                if m["product_id"] == product_id
                and m["state"] in ("waiting", "confirmed", "partially_available", "assigned")]

    def reserved(self, product_id: int) -> float:
        return float(sum(m["quantity"] for m in self._open_moves(product_id)))

    def free_qty(self, product_id: int) -> float:
        on_hand = float(self.tables["product.product"][product_id]["qty_available"])
        return on_hand - self.reserved(product_id)

    def outgoing_qty(self, product_id: int) -> float:
        customer = {i for i, loc in self.tables["stock.location"].items()
                    if loc["usage"] == "customer"}
        return float(sum(m["product_uom_qty"] for m in self._open_moves(product_id)
                         if m["location_dest_id"] in customer))

    def _reserve(self, move: Record) -> None:
        need = move["product_uom_qty"] - move["quantity"]
        take = max(0.0, min(need, self.free_qty(move["product_id"])))
        move["quantity"] += take
        move["state"] = ("assigned" if move["quantity"] >= move["product_uom_qty"] else
                         "partially_available" if move["quantity"] > 0 else "confirmed")
        move["write_date"] = _now()

    # --- business methods ---------------------------------------------------------------

    def action(self, model: str, method: str, ids: list[int], context: dict[str, Any]) -> Any:
        records = self.browse(model, ids)
        handler = getattr(self, f"_{model.replace('.', '_')}_{method}")
        result: Any = handler(records, context)
        return result

    def _sale_order_action_confirm(self, orders: list[Record], context: dict[str, Any]) -> bool:
        wrong = [o["name"] for o in orders if o["state"] not in ("draft", "sent")]
        if wrong:
            raise user_error("The following orders are not in a state requiring confirmation: "
                             + ", ".join(wrong))
        for order in orders:
            order.update(state="sale", date_order=_now(), write_date=_now())
        return True

    def _sale_order_action_cancel(self, orders: list[Record], context: dict[str, Any]) -> Any:
        if any(o["locked"] for o in orders):
            raise user_error("You cannot cancel a locked order. Please unlock it first if you "
                             "want to cancel it.")
        if not context.get("disable_cancel_warning") and any(o["state"] != "draft"
                                                              for o in orders):
            if len(orders) != 1:
                raise bug("ValueError", "Expected singleton: sale.order"
                                        f"{tuple(o['id'] for o in orders)!r}")
            return {"name": f"Cancel {orders[0]['name']}", "type": "ir.actions.act_window",
                    "res_model": "sale.order.cancel", "view_mode": "form", "target": "new",
                    "context": {"default_order_id": orders[0]["id"]}}
        for order in orders:
            order.update(state="cancel", write_date=_now())
        return True

    def _picking_moves(self, picking: Record) -> list[Record]:
        return self.children("stock.move", "picking_id", picking["id"])

    def _stock_picking_action_confirm(self, pickings: list[Record],
                                      context: dict[str, Any]) -> bool:
        for picking in pickings:
            for move in self._picking_moves(picking):
                if move["state"] == "draft":
                    move["state"] = "confirmed"
                    self._reserve(move)  # the picking type reserves at confirmation
        return True

    def _stock_picking_action_assign(self, pickings: list[Record],
                                     context: dict[str, Any]) -> bool:
        self._stock_picking_action_confirm(
            [p for p in pickings if _picking_state(self, p) == "draft"], context)
        moves = [m for p in pickings for m in self._picking_moves(p)
                 if m["state"] not in ("draft", "cancel", "done")]
        if not moves:
            raise user_error("Nothing to check the availability for.")
        for move in moves:
            if move["state"] in ("confirmed", "partially_available", "waiting"):
                self._reserve(move)
        return True

    def _stock_picking_action_cancel(self, pickings: list[Record],
                                     context: dict[str, Any]) -> bool:
        moves = [m for p in pickings for m in self._picking_moves(p)]
        if any(m["state"] == "done" for m in moves):
            raise user_error("You cannot cancel a stock move that has been set to 'Done'.")
        for move in moves:
            if move["state"] != "cancel":
                move.update(state="cancel", quantity=0.0, write_date=_now())
        return True

    def _account_move_action_post(self, moves: list[Record], context: dict[str, Any]) -> bool:
        for move in moves:
            if move["state"] == "posted":
                raise user_error(f"The entry {move['name']} (id {move['id']}) is already "
                                 "posted.")
            if move["move_type"] != "entry" and not self.children(
                    "account.move.line", "move_id", move["id"]):
                raise user_error("You need to add a line before posting.")
            if move["move_type"] != "entry" and not move["partner_id"]:
                raise user_error("The field 'Customer' is required, please complete it to "
                                 "validate the Customer Credit Note.")
        for move in moves:
            prefix = {"out_invoice": "INV", "out_refund": "RINV", "in_invoice": "BILL",
                      "in_refund": "RBILL"}.get(move["move_type"], "MISC")
            year = datetime.now(UTC).year
            move.update(state="posted", name=self.next_name(f"{prefix}/{year}/"),
                        invoice_date=move["invoice_date"] or _now()[:10], write_date=_now())
        return False


def _third(cmd: list[Any] | tuple[Any, ...]) -> Any:
    return cmd[2] if len(cmd) > 2 else None


# --- seed data ---------------------------------------------------------------------------

SEEDED_WRITE_DATE = "2025-01-15 09:00:00"

CATALOGUE: list[tuple[str, str, str, float, float]] = [
    ("SKU-001", "Linen Shirt", "Breathable washed-linen shirt, relaxed fit.", 59.0, 40),
    ("SKU-002", "Merino Crew Sweater", "Fine-gauge merino wool, machine washable.", 89.0, 25),
    ("SKU-003", "Canvas Tote Bag", "Heavy 16 oz organic cotton canvas, inner pocket.", 24.5, 120),
    ("SKU-004", "Leather Belt", "Full-grain vegetable-tanned leather, brass buckle.", 45.0, 30),
    ("SKU-005", "Wool Beanie", "Ribbed lambswool beanie, one size.", 19.9, 60),
    ("SKU-006", "Chino Trousers", "Stretch cotton twill, tapered leg.", 69.0, 35),
    ("SKU-007", "Rain Jacket", "Seam-sealed waterproof shell with packable hood.", 149.0, 12),
    ("SKU-008", "Cotton Socks (3 pack)", "Combed cotton, reinforced heel and toe.", 14.0, 200),
    ("SKU-OOS", "Limited Edition Scarf", "Hand-woven cashmere scarf; sold out.", 129.0, 0),
]


def _seed(orm: Orm) -> None:
    """Seed records with fixed ids and dates, bypassing the create counters."""
    def put(model: str, **values: Any) -> int:
        orm._next_id[model] += 1
        rec = {"id": orm._next_id[model], "create_date": SEEDED_WRITE_DATE,
               "write_date": SEEDED_WRITE_DATE, **values}
        orm.tables[model][rec["id"]] = rec
        return int(rec["id"])

    put("res.partner", name="My Company", email="info@yourcompany.example", phone=False,
        is_company=True, active=True)
    put("res.partner", name="OdooBot", email="odoobot@example.com", phone=False,
        is_company=False, active=False)
    put("res.partner", name="Mitchell Admin", email="admin@yourcompany.example",
        phone="+1 555-555-5555", is_company=False, active=True)
    put("res.partner", name="Deco Addict", email="deco.addict82@example.com",
        phone="+1 555-555-5510", is_company=True, active=True)
    vendors = put("stock.location", name="Vendors", complete_name="Partners/Vendors",
                  usage="supplier")
    customers = put("stock.location", name="Customers", complete_name="Partners/Customers",
                    usage="customer")
    stock = put("stock.location", name="Stock", complete_name="WH/Stock", usage="internal")
    put("stock.picking.type", name="Receipts", code="incoming", sequence_code="IN",
        default_location_src_id=vendors, default_location_dest_id=stock)
    put("stock.picking.type", name="Delivery Orders", code="outgoing", sequence_code="OUT",
        default_location_src_id=stock, default_location_dest_id=customers)
    for code, name, description, price, qty in CATALOGUE:
        put("product.product", name=name, default_code=code, description_sale=description,
            list_price=price, type="consu", is_storable=True, sale_ok=True, active=True,
            qty_available=float(qty))


# --- method signatures -------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    params: tuple[str, ...]
    """Parameter names in positional order (after the ids for record methods)."""
    api_model: bool
    required: tuple[str, ...] = ()


METHODS: dict[str, Method] = {
    "search": Method(("domain", "offset", "limit", "order"), True, ("domain",)),
    "search_read": Method(("domain", "fields", "offset", "limit", "order"), True),
    "search_count": Method(("domain", "limit"), True, ("domain",)),
    "read": Method(("fields", "load"), False),
    "create": Method(("vals_list",), True, ("vals_list",)),
    "write": Method(("vals",), False, ("vals",)),
    "action_confirm": Method((), False),
    "action_cancel": Method((), False),
    "action_assign": Method((), False),
    "action_post": Method((), False),
}

ArgError = Callable[[str], OdooException]


def _bind(name: str, args: list[Any], kwargs: dict[str, Any], error: ArgError,
          ) -> dict[str, Any]:
    """Match arguments to the method's parameters as Python would, naming what is wrong."""
    spec = METHODS[name]
    if len(args) > len(spec.params):
        raise error(f"{name}() takes {len(spec.params) + 1} positional arguments but "
                    f"{len(args) + 1} were given")
    bound = dict(zip(spec.params, args, strict=False))
    for key, value in kwargs.items():
        if key not in spec.params:
            raise error(f"{name}() got an unexpected keyword argument {key!r}")
        if key in bound:
            raise error(f"{name}() got multiple values for argument {key!r}")
        bound[key] = value
    for key in spec.required:
        if key not in bound:
            raise error(f"{name}() missing 1 required positional argument: {key!r}")
    return bound


def _ids(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool)
                                       for i in value):
        return list(value)
    raise bug("TypeError", f"ids must be a list of integers, not {value!r}")


# --- the sandbox system -------------------------------------------------------------------


class OdooSandbox(SandboxSystem):
    """Odoo 19 over JSON-2 and JSON-RPC, one in-memory database; see the module docstring."""

    name: ClassVar[str] = "odoo"
    default_port: ClassVar[int] = 8902

    def __init__(self, *, seed: int | None = None) -> None:
        self.orm = Orm()
        super().__init__(seed=seed)

    # --- the ORM call both protocols share ----------------------------------------------

    def _method(self, model: str, method: str, *, json2: bool) -> None:
        """Check that ``model.method`` may be called remotely, as ``get_public_method``."""
        if method.startswith("_"):
            raise access_error(f"Private methods (such as '{model}.{method}') cannot be "
                               "called remotely.")
        if method not in METHODS or (method.startswith("action_")
                                     and method not in MODELS[model].actions):
            message = f"The method '{model}.{method}' does not exist"
            raise (http_error("NotFound", 404, message) if json2
                   else bug("AttributeError", message))

    def _call(self, model: str, method: str, ids: list[int], params: dict[str, Any],
              context: dict[str, Any]) -> Any:
        orm = self.orm
        orm.calls[f"{model}.{method}"] += 1
        if method in ("search", "search_read", "search_count"):
            domain = params.get("domain") or []
            found = orm.search(model, domain, offset=params.get("offset", 0) or 0,
                               limit=params.get("limit"), order=params.get("order"),
                               context=context)
            if method == "search":
                return found
            if method == "search_count":
                return len(found)
            return orm.read(model, found, params.get("fields"))
        if method == "read":
            return orm.read(model, ids, params.get("fields"))
        if method == "create":
            return orm.create(model, params["vals_list"])
        if method == "write":
            return orm.write(model, ids, params["vals"])
        return orm.action(model, method, ids, context)

    # --- JSON-2 -------------------------------------------------------------------------

    async def _json2(self, model: str, method: str, request: Request) -> Response:
        try:
            db = request.headers.get("x-odoo-database")
            if db is not None and db != DATABASE:
                raise http_error("NotFound", 404, f"database {db!r} not found")
            auth = request.headers.get("authorization", "")
            scheme, _, key = auth.partition(" ")
            if scheme.lower() != "bearer" or key.strip() != API_KEY:
                raise http_error("Unauthorized", 401, "Invalid apikey")
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else {}
            except ValueError as exc:
                raise http_error("BadRequest", 400,
                                 f"could not parse the body as json: {exc}") from None
            if not isinstance(body, dict):
                raise http_error("BadRequest", 400, "the body must be a JSON object")
            if model not in MODELS:
                raise http_error("NotFound", 404, f"the model {model!r} does not exist")
            self._method(model, method, json2=True)
            ids = _ids(body.pop("ids", []) or [])
            context = body.pop("context", {}) or {}
            if METHODS[method].api_model and ids:
                raise http_error("UnprocessableEntity", 422,
                                 f"cannot call {model}.{method} with ids")
            params = _bind(method, [], body,
                           lambda m: http_error("UnprocessableEntity", 422, m))
            return JSONResponse(self._call(model, method, ids, params, context))
        except OdooException as exc:
            return json_error(exc.status, exc.serialize())

    # --- JSON-RPC -----------------------------------------------------------------------

    async def _jsonrpc(self, request: Request) -> Response:
        request_id: Any = None
        try:
            try:
                body = json.loads(await request.body())
            except ValueError as exc:
                raise http_error("BadRequest", 400, f"Invalid JSON data: {exc}") from None
            if not isinstance(body, dict):
                raise http_error("BadRequest", 400, "Invalid JSON-RPC data")
            request_id = body.get("id")
            params = body.get("params") or {}
            if not isinstance(params, dict) or not isinstance(params.get("args", []), list):
                raise http_error("BadRequest", 400, "Invalid JSON-RPC data")
            result = self._dispatch_rpc(params.get("service"), params.get("method"),
                                        list(params.get("args") or []))
            return JSONResponse({"jsonrpc": "2.0", "id": request_id, "result": result})
        except OdooException as exc:
            code, message = 200, "Odoo Server Error"
            if exc.name == "werkzeug.exceptions.NotFound":
                code, message = 404, "404: Not Found"
            error = {"code": code, "message": message, "data": exc.serialize()}
            return JSONResponse({"jsonrpc": "2.0", "id": request_id, "error": error})

    def _dispatch_rpc(self, service: Any, method: Any, args: list[Any]) -> Any:
        if service == "common":
            if method == "version":
                return {"server_version": "19.0", "server_version_info": VERSION_INFO,
                        "server_serie": "19.0", "protocol_version": 1}
            if method in ("login", "authenticate"):
                if len(args) < 3:
                    raise bug("TypeError", f"exp_{method}() missing required arguments")
                db, login, password = args[:3]
                self._database(db)
                return ADMIN_UID if (login == LOGIN and password == API_KEY) else False
        elif service == "object" and method in ("execute", "execute_kw"):
            if len(args) < 5:
                raise bug("TypeError", f"{method}() missing required arguments")
            db, uid, password, model, name = args[:5]
            self._database(db)
            if uid != ADMIN_UID or password != API_KEY:
                raise access_denied()
            if method == "execute_kw":
                positional = args[5] if len(args) > 5 else []
                kwargs = args[6] if len(args) > 6 else {}
                if not isinstance(positional, list) or not isinstance(kwargs, dict):
                    raise bug("TypeError", "execute_kw() takes args as a list and kwargs as "
                                           "an object")
            else:
                positional, kwargs = list(args[5:]), {}
            return self._execute(str(model), str(name), list(positional), dict(kwargs))
        raise bug("NameError", f"service {service!r} has no method {method!r}")

    def _database(self, db: Any) -> None:
        if db != DATABASE:
            raise OdooException(
                "psycopg2.OperationalError",
                'connection to server on socket "/var/run/postgresql/.s.PGSQL.5432" '
                f'failed: FATAL:  database "{db}" does not exist', 500)

    def _execute(self, model: str, method: str, args: list[Any],
                 kwargs: dict[str, Any]) -> Any:
        if model not in MODELS:
            raise user_error(f"Object {model} doesn't exist")
        self._method(model, method, json2=False)
        context = kwargs.pop("context", {}) or {}
        ids: list[int] = []
        if not METHODS[method].api_model:
            if not args:
                raise bug("TypeError", f"{model}.{method}() needs the record ids as its "
                                       "first argument")
            ids, args = _ids(args[0]), args[1:]
        params = _bind(method, args, kwargs, lambda m: bug("TypeError", m))
        if method == "create" and isinstance(params["vals_list"], dict):
            return self._call(model, method, ids, params, context)[0]
        return self._call(model, method, ids, params, context)

    # --- SandboxSystem ------------------------------------------------------------------

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.get("/web/version")
        async def web_version() -> dict[str, Any]:
            return {"version_info": VERSION_INFO, "version": "19.0"}

        @router.post("/json/2/{model}/{method}")
        async def json2(model: str, method: str, request: Request) -> Response:
            return await self._json2(model, method, request)

        @router.api_route("/json/2/{subpath:path}",
                          methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
        async def json2_404(subpath: str) -> Response:
            exc = http_error("NotFound", 404, "Did you mean POST /json/2/<model>/<method>?")
            return json_error(404, exc.serialize())

        @router.post("/jsonrpc")
        async def jsonrpc(request: Request) -> Response:
            return await self._jsonrpc(request)

        return router

    def install(self, app: FastAPI) -> None:
        async def http_exception(request: Request, exc: Exception) -> Response:
            status = getattr(exc, "status_code", 500)
            kind, text = {
                404: ("NotFound", "The requested URL was not found on the server. If you "
                                  "entered the URL manually please check your spelling and "
                                  "try again."),
                405: ("MethodNotAllowed", "The method is not allowed for the requested URL."),
            }.get(status, ("InternalServerError", str(getattr(exc, "detail", ""))))
            return json_error(status, http_error(kind, status, text).serialize())

        app.add_exception_handler(StarletteHTTPException, http_exception)

    def inspect(self) -> dict[str, Any]:
        orm, t = self.orm, self.orm.tables
        sku = {pid: p["default_code"] for pid, p in t["product.product"].items()}
        stock = {p["default_code"]: {"product_id": pid, "name": p["name"],
                                     "on_hand": p["qty_available"],
                                     "reserved": orm.reserved(pid),
                                     "available": orm.free_qty(pid)}
                 for pid, p in t["product.product"].items()}
        partners = {p["email"] or f"#{pid}": {"id": pid, "name": p["name"], "email": p["email"]}
                    for pid, p in t["res.partner"].items()}
        orders = {o["client_order_ref"] or o["name"]: {
            "id": oid, "name": o["name"], "state": o["state"], "partner_id": o["partner_id"],
            "amount_total": _total("sale.order.line", "order_id")(orm, o),
            "lines": [{"sku": sku.get(line["product_id"]), "quantity": line["product_uom_qty"],
                       "unit_price": line["price_unit"]}
                      for line in orm.children("sale.order.line", "order_id", oid)],
        } for oid, o in t["sale.order"].items()}
        pickings = {p["origin"] or p["name"]: {
            "id": pid, "name": p["name"], "state": _picking_state(orm, p),
            "type": _picking_type_code(orm, p), "move_type": p["move_type"],
            "moves": [{"sku": sku.get(m["product_id"]), "demand": m["product_uom_qty"],
                       "reserved": m["quantity"], "state": m["state"]}
                      for m in orm.children("stock.move", "picking_id", pid)],
        } for pid, p in t["stock.picking"].items()}
        credit_notes = {m["ref"] or f"#{mid}": {
            "id": mid, "name": m["name"], "state": m["state"], "partner_id": m["partner_id"],
            "reason": m["narration"],
            "amount_total": _total("account.move.line", "move_id")(orm, m),
            "lines": [{"sku": sku.get(line["product_id"]), "name": line["name"],
                       "quantity": line["quantity"], "unit_price": line["price_unit"]}
                      for line in orm.children("account.move.line", "move_id", mid)],
        } for mid, m in t["account.move"].items() if m["move_type"] == "out_refund"}
        return {"database": DATABASE, "stock": stock, "partners": partners,
                "sale_orders": orders, "pickings": pickings, "credit_notes": credit_notes,
                "creates": {model: dict(counts) for model, counts in orm.creates.items()},
                "calls": dict(orm.calls)}

    def reset(self) -> None:
        self.orm = Orm()

    def error_response(self, status: int, *, retry_after_s: float | None = None) -> Response:
        kind, text = {
            429: ("TooManyRequests", "This user has exceeded an allotted request count. Try "
                                     "again later."),
            500: ("InternalServerError", "The server encountered an internal error and was "
                                         "unable to complete your request. Either the server "
                                         "is overloaded or there is an error in the "
                                         "application."),
            504: ("GatewayTimeout", "The connection to an upstream server timed out."),
        }.get(status, ("InternalServerError", "Internal Server Error"))
        headers = ({"Retry-After": str(max(0, round(retry_after_s)))}
                   if retry_after_s is not None else None)
        return json_error(status, http_error(kind, status, text).serialize(), headers)

    def connector_env(self, base_url: str) -> dict[str, str]:
        return {"HUB_ODOO_BASE_URL": base_url, "HUB_ODOO_DATABASE": DATABASE,
                "HUB_ODOO_API_KEY": API_KEY, "HUB_ODOO_PROTOCOL": "json2",
                "HUB_ODOO_LOGIN": LOGIN}
