"""The ERP connector: Odoo, over JSON-2 (Odoo 19+) or JSON-RPC ``execute_kw`` (Odoo 17-18).

``HUB_ODOO_PROTOCOL`` picks the transport; every operation is the same ORM call on either:

```
json2    POST /json/2/<model>/<method>   Authorization: bearer <key>, X-Odoo-Database
         named arguments in; errors are 4xx/5xx with Odoo's error object
jsonrpc  POST /jsonrpc  object.execute_kw(db, uid, key, model, method, args, kwargs)
         uid from common.authenticate once; errors arrive inside HTTP 200 bodies
```
Errors map in one place (``classify`` and ``_decode``), by the Odoo exception's name:
``UserError``, ``ValidationError``, ``AccessError``, ``AccessDenied``, ``MissingError``,
werkzeug's 4xx and request bugs (``builtins.ValueError`` for an unknown field, which JSON-2
answers with a 500) raise ``OdooError`` (permanent); serialization failures and deadlocks
(``psycopg2.errors.SerializationFailure``, "could not serialize access") and any other
server error are transient, as are 5xx, 429 and connection errors (from the base).

Odoo has no idempotency keys, so each create looks first by a natural key and a re-run
step finds what its first attempt made: partners by email, sale orders by
``client_order_ref`` (our order id), stock reservations by the outgoing picking's
``origin``, credit notes (``account.move``, ``out_refund``) by ``ref``. Records cancelled
earlier are not reused. Creates are sent ``idempotent=False``: an attempt that may have
reached Odoo is not repeated in-process; the engine's retry of the step looks again first.

Stock reservation: the picking is created with ``move_type="one"`` ("when all products are
ready"), so after ``action_assign`` its state is ``assigned`` only if every line is fully
reserved. Otherwise the connector cancels it (releasing any partial reservation) and raises
``InsufficientStockError`` naming the SKUs. Cancelling a confirmed sale order passes
``disable_cancel_warning`` in the context, the public way past Odoo 17's cancel wizard.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, FilePath, SecretStr
from pydantic_settings import SettingsConfigDict

from connectors.base import (
    ConnectorSettings,
    HttpConnector,
    Sleep,
    Verdict,
    load_settings,
)
from hub import PermanentConnectorError, StepContext, provides

PRODUCT_FIELDS = ["id", "default_code", "name", "description_sale", "list_price",
                  "qty_available", "write_date"]
STOCK_FIELDS = ["default_code", "name", "qty_available"]
_BOOLEAN_FIELDS = frozenset({"active", "sale_ok", "is_storable", "is_company", "locked"})

_TRANSIENT_NAMES = frozenset({
    "psycopg2.errors.SerializationFailure",
    "psycopg2.errors.DeadlockDetected",
    "psycopg2.errors.LockNotAvailable",
    "psycopg2.extensions.TransactionRollbackError",
    "odoo.exceptions.ConcurrencyError",
})
_TRANSIENT_TEXT = re.compile(
    r"could not serialize access|deadlock detected|concurrent update|could not obtain lock",
    re.IGNORECASE)
_REQUEST_BUGS = frozenset({"builtins.ValueError", "builtins.TypeError", "builtins.KeyError",
                           "builtins.AttributeError", "builtins.NameError"})
_MESSAGE_CHARS = 300


class OdooSettings(ConnectorSettings):
    """``HUB_ODOO_*``: where Odoo is, which database, which protocol, and the API key (or
    ``HUB_ODOO_API_KEY_FILE``); ``login`` is only used by JSON-RPC's ``authenticate``."""

    model_config = SettingsConfigDict(env_prefix="HUB_ODOO_", extra="ignore")
    required_secrets: ClassVar[tuple[str, ...]] = ("api_key",)

    database: str = Field(min_length=1)
    protocol: Literal["json2", "jsonrpc"] = "json2"
    api_key: SecretStr | None = None
    api_key_file: FilePath | None = None
    login: str = Field(default="admin", min_length=1)


@dataclass(frozen=True)
class OdooFault:
    """An error as Odoo reports it: the exception's qualified name and its message."""

    name: str
    message: str

    @property
    def transient(self) -> bool:
        return self.name in _TRANSIENT_NAMES or bool(_TRANSIENT_TEXT.search(self.message))

    @property
    def definitive(self) -> bool:
        """Odoo's business and access errors, HTTP errors and request bugs: retrying the
        same call cannot change the answer."""
        return (self.name.startswith(("odoo.exceptions.", "werkzeug.exceptions."))
                or self.name in _REQUEST_BUGS) and not self.transient


class OdooError(PermanentConnectorError):
    """Odoo refused a call for good. ``exception`` is the Odoo exception's qualified name
    (``odoo.exceptions.UserError``), ``odoo_message`` its message, ``operation`` the
    ``model.method`` called; ``status`` the HTTP status (200 on JSON-RPC)."""

    def __init__(self, message: str, *, operation: str, exception: str, odoo_message: str,
                 status: int) -> None:
        super().__init__(message)
        self.operation = operation
        self.exception = exception
        self.odoo_message = odoo_message
        self.status = status


class InsufficientStockError(PermanentConnectorError):
    """Not every line of an order could be reserved; ``shortages`` maps each short SKU to
    (quantity requested, quantity reservable). Nothing stays reserved."""

    def __init__(self, order_ref: str, shortages: dict[str, tuple[float, float]]) -> None:
        detail = ", ".join(f"{sku} ({_num(want)} requested, {_num(got)} reservable)"
                           for sku, (want, got) in sorted(shortages.items()))
        super().__init__(f"odoo: not enough stock to reserve order {order_ref!r}: {detail}")
        self.order_ref = order_ref
        self.shortages = shortages


class OdooConnector(HttpConnector):
    """Odoo's ORM over the configured protocol, and the commerce operations built on it."""

    idempotency_header: ClassVar[str | None] = None

    def __init__(self, settings: OdooSettings, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Sleep = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        assert settings.api_key is not None  # required_secrets guarantees it
        self._key = settings.api_key.get_secret_value()
        headers = {"User-Agent": "commerce-hub odoo-connector"}
        if settings.protocol == "json2":
            headers["Authorization"] = f"bearer {self._key}"
            headers["X-Odoo-Database"] = settings.database
        super().__init__("odoo", settings, headers=headers, transport=transport, sleep=sleep,
                         clock=clock)
        self.odoo: OdooSettings = settings
        self._rpc_ids = itertools.count(1)
        self._uid: int | None = None
        self._auth_lock = asyncio.Lock()
        self._outgoing_type: dict[str, int] | None = None

    # --- the generic ORM call -----------------------------------------------------------

    async def call(self, ctx: StepContext | None, model: str, method: str, *,
                   ids: list[int] | None = None, context: dict[str, Any] | None = None,
                   idempotent: bool = True, **params: Any) -> Any:
        """Call ``model.method`` with named ``params`` over the configured protocol and
        return its result; ``ids`` for record methods."""
        operation = f"{model}.{method}"
        touches = ",".join(str(i) for i in ids) if ids else None
        if self.odoo.protocol == "json2":
            body: dict[str, Any] = dict(params)
            if ids is not None:
                body["ids"] = ids
            if context:
                body["context"] = context
            response = await self.request("POST", f"/json/2/{model}/{method}", ctx=ctx,
                                          json=body, idempotent=idempotent,
                                          operation=operation, touches=touches)
            return self._decode(operation, response)
        kwargs = dict(params)
        if context:
            kwargs["context"] = context
        uid = await self._authenticate(ctx)
        args = [self.odoo.database, uid, self._key, model, method,
                [ids] if ids is not None else [], kwargs]
        return await self._rpc(ctx, operation, "object", "execute_kw", args,
                               idempotent=idempotent, touches=touches)

    async def _rpc(self, ctx: StepContext | None, operation: str, service: str, method: str,
                   args: list[Any], *, idempotent: bool = True,
                   touches: str | None = None) -> Any:
        payload = {"jsonrpc": "2.0", "method": "call", "id": next(self._rpc_ids),
                   "params": {"service": service, "method": method, "args": args}}
        response = await self.request("POST", "/jsonrpc", ctx=ctx, json=payload,
                                      idempotent=idempotent, operation=operation,
                                      touches=touches)
        return self._decode(operation, response)

    async def _authenticate(self, ctx: StepContext | None) -> int:
        """The uid JSON-RPC calls need, asked once per connector."""
        async with self._auth_lock:
            if self._uid is None:
                s = self.odoo
                uid = await self._rpc(ctx, "common.authenticate", "common", "authenticate",
                                      [s.database, s.login, self._key, {}])
                if not isinstance(uid, int) or isinstance(uid, bool):
                    raise PermanentConnectorError(
                        f"odoo: authentication refused for login {s.login!r} on database "
                        f"{s.database!r} (common.authenticate answered {uid!r}); check "
                        "HUB_ODOO_LOGIN and HUB_ODOO_API_KEY")
                self._uid = uid
            return self._uid

    # --- error mapping: the one edge helper ---------------------------------------------

    def fault(self, response: httpx.Response) -> OdooFault | None:
        """The Odoo error in ``response``, if it carries one."""
        try:
            body = response.json()
        except ValueError:
            return None
        if not isinstance(body, dict):
            return None
        if self.odoo.protocol == "jsonrpc" and isinstance(body.get("error"), dict):
            error = body["error"]
            data = error.get("data") if isinstance(error.get("data"), dict) else {}
            return OdooFault(str(data.get("name") or error.get("message") or "unknown"),
                             str(data.get("message") or error.get("message") or ""))
        if response.status_code >= 400 and isinstance(body.get("name"), str):
            return OdooFault(body["name"], str(body.get("message") or ""))
        return None

    outside_id_fields: ClassVar[tuple[tuple[str | int, ...], ...]] = (
        ("result",), ("result", 0), ("result", 0, "id"), (), (0,), (0, "id"))
    """The record id a call made or found (a sale order's): JSON-RPC wraps the method's
    result in ``result``, JSON-2 answers it as the body; ``create`` answers an id (or ids),
    ``search_read`` records."""

    def classify(self, response: httpx.Response) -> Verdict:
        """A definitive Odoo error reads as "success" here, meaning only that Odoo answered
        and the breaker may count it so: ``_decode`` turns it into ``OdooError``."""
        fault = self.fault(response)
        if fault is None:
            return super().classify(response)
        if fault.transient:
            return "transient"
        if response.status_code == 200:  # JSON-RPC: an error inside a 200
            return "success" if fault.definitive else "transient"
        verdict = super().classify(response)
        if verdict == "permanent" or (verdict == "transient" and fault.name in _REQUEST_BUGS
                                      and response.status_code == 500):
            return "success"
        return verdict

    def _decode(self, operation: str, response: httpx.Response) -> Any:
        fault = self.fault(response)
        if fault is not None:
            text = self.redact(" ".join(fault.message.split()))[:_MESSAGE_CHARS]
            where = f" (HTTP {response.status_code})" if response.status_code != 200 else ""
            raise OdooError(f"odoo: {operation} refused{where}: {fault.name}: {text}",
                            operation=operation, exception=fault.name, odoo_message=text,
                            status=response.status_code)
        try:
            body = response.json()
        except ValueError:
            raise PermanentConnectorError(
                f"odoo: {operation} answered {response.status_code} without JSON") from None
        if self.odoo.protocol == "jsonrpc":
            if not isinstance(body, dict) or "result" not in body:
                raise PermanentConnectorError(
                    f"odoo: {operation} answered without a JSON-RPC result")
            return body["result"]
        return body

    # --- catalogue ----------------------------------------------------------------------

    async def count_products(self, ctx: StepContext | None) -> int:
        count = await self.call(ctx, "product.product", "search_count",
                                domain=[["sale_ok", "=", True]])
        return int(count)

    async def get_product(self, ctx: StepContext | None, sku: str) -> dict[str, Any] | None:
        """The product whose internal reference is ``sku``; empty fields are ``None``."""
        rows = await self.call(ctx, "product.product", "search_read",
                               domain=[["default_code", "=", sku]], fields=PRODUCT_FIELDS,
                               limit=1)
        return _plain(rows[0]) if rows else None

    async def list_products(self, ctx: StepContext | None, *,
                            fields: list[str] | None = None) -> list[dict[str, Any]]:
        """Every saleable product (for stock reconciliation), ordered by SKU."""
        rows = await self.call(ctx, "product.product", "search_read",
                               domain=[["sale_ok", "=", True]], fields=fields or STOCK_FIELDS,
                               order="default_code, id")
        return [_plain(row) for row in rows]

    # --- partners -----------------------------------------------------------------------

    async def find_or_create_partner(self, ctx: StepContext | None, *, email: str,
                                     name: str) -> int:
        """The contact with this email (case-insensitive), created if there is none."""
        found = await self.call(ctx, "res.partner", "search",
                                domain=[["email", "=ilike", _like_literal(email)]],
                                limit=1, order="id")
        if found:
            return int(found[0])
        created = await self.call(ctx, "res.partner", "create",
                                  vals_list=[{"name": name, "email": email}],
                                  idempotent=False)
        return int(created[0])

    # --- stock --------------------------------------------------------------------------

    async def reserve_stock(self, ctx: StepContext | None, *, order_ref: str,
                            lines: list[tuple[str, int]]) -> dict[str, Any]:
        """Reserve ``lines`` (SKU, quantity) on an outgoing picking whose origin is
        ``order_ref``: all of them, or nothing and ``InsufficientStockError``."""
        existing = await self.call(
            ctx, "stock.picking", "search_read",
            domain=[["origin", "=", order_ref], ["picking_type_code", "=", "outgoing"],
                    ["state", "!=", "cancel"]],
            fields=["state"], limit=1, order="id desc")
        if existing:
            picking_id, state = int(existing[0]["id"]), str(existing[0]["state"])
        else:
            if not lines:
                raise PermanentConnectorError(
                    f"odoo: nothing to reserve for order {order_ref!r}: no lines")
            products = await self._product_ids(ctx, [sku for sku, _ in lines])
            ptype = await self._delivery_type(ctx)
            # Locations on picking and moves alike: Odoo 17 derives them, older ones need them.
            where = {k: v for k, v in (("location_id", ptype["src"]),
                                       ("location_dest_id", ptype["dest"])) if v}
            moves = [[0, 0, {"product_id": products[sku], "product_uom_qty": qty, **where}]
                     for sku, qty in lines]
            created = await self.call(ctx, "stock.picking", "create", idempotent=False,
                                      vals_list=[{"picking_type_id": ptype["id"],
                                                  "origin": order_ref, "move_type": "one",
                                                  "move_ids": moves, **where}])
            picking_id, state = int(created[0]), "draft"
        if state != "assigned":
            await self.call(ctx, "stock.picking", "action_assign", ids=[picking_id])
            rows = await self.call(ctx, "stock.picking", "read", ids=[picking_id],
                                   fields=["state", "move_ids"])
            if rows[0]["state"] != "assigned":
                shortages = await self._shortages(ctx, rows[0]["move_ids"])
                await self.call(ctx, "stock.picking", "action_cancel", ids=[picking_id])
                raise InsufficientStockError(order_ref, shortages)
        return {"picking_id": picking_id, "state": "assigned"}

    async def find_picking(self, ctx: StepContext | None, order_ref: str) -> int | None:
        """The live outgoing picking of ``order_ref``, if one was made (a reservation whose
        step recorded no output: its compensation looks it up)."""
        found = await self.call(
            ctx, "stock.picking", "search",
            domain=[["origin", "=", order_ref], ["picking_type_code", "=", "outgoing"],
                    ["state", "!=", "cancel"]], limit=1, order="id desc")
        return int(found[0]) if found else None

    async def find_sale_order(self, ctx: StepContext | None, order_ref: str) -> int | None:
        """The live sales order of ``order_ref`` (``client_order_ref``), if one was made."""
        found = await self.call(ctx, "sale.order", "search",
                                domain=[["client_order_ref", "=", order_ref],
                                        ["state", "!=", "cancel"]], limit=1, order="id desc")
        return int(found[0]) if found else None

    async def release_stock(self, ctx: StepContext | None, picking_id: int) -> None:
        """Cancel the picking, freeing its reservation; Odoo treats a cancelled one as done."""
        await self.call(ctx, "stock.picking", "action_cancel", ids=[picking_id])

    async def _delivery_type(self, ctx: StepContext | None) -> dict[str, int]:
        """The warehouse's outgoing operation type and its default locations (cached)."""
        if self._outgoing_type is None:
            rows = await self.call(
                ctx, "stock.picking.type", "search_read", domain=[["code", "=", "outgoing"]],
                fields=["default_location_src_id", "default_location_dest_id"], limit=1,
                order="id")
            if not rows:
                raise PermanentConnectorError(
                    "odoo: no outgoing operation type (stock.picking.type with code "
                    "'outgoing'); is the Inventory app installed?")
            row = rows[0]
            self._outgoing_type = {"id": int(row["id"]),
                                   "src": _many2one_id(row["default_location_src_id"]),
                                   "dest": _many2one_id(row["default_location_dest_id"])}
        return self._outgoing_type

    async def _shortages(self, ctx: StepContext | None, move_ids: list[int],
                         ) -> dict[str, tuple[float, float]]:
        moves = await self.call(ctx, "stock.move", "read", ids=move_ids,
                                fields=["product_id", "product_uom_qty", "quantity"])
        short = [m for m in moves if float(m["quantity"]) < float(m["product_uom_qty"])]
        product_ids = sorted({_many2one_id(m["product_id"]) for m in short})
        products = await self.call(ctx, "product.product", "read", ids=product_ids,
                                   fields=["default_code"]) if product_ids else []
        sku = {p["id"]: p["default_code"] or f"product {p['id']}" for p in products}
        shortages: dict[str, tuple[float, float]] = {}
        for m in short:
            code = sku[_many2one_id(m["product_id"])]
            want, got = shortages.get(code, (0.0, 0.0))
            shortages[code] = (want + float(m["product_uom_qty"]), got + float(m["quantity"]))
        return shortages

    # --- sale orders --------------------------------------------------------------------

    async def create_sale_order(self, ctx: StepContext | None, *, order_ref: str,
                                partner_id: int, lines: list[dict[str, Any]]) -> int:
        """A quotation for ``order_ref`` (``client_order_ref``), or the one made before.

        ``lines``: ``{"sku", "quantity", "unit_price"}``, prices in currency units (Odoo's
        ``price_unit``, e.g. 59.0), not minor units."""
        found = await self.find_sale_order(ctx, order_ref)
        if found is not None:
            return found
        checked = [_line(f"sale order {order_ref!r}", i, line)
                   for i, line in enumerate(lines)]
        products = await self._product_ids(ctx, [sku for sku, _, _ in checked])
        order_lines = [[0, 0, {"product_id": products[sku], "product_uom_qty": qty,
                               "price_unit": price}] for sku, qty, price in checked]
        created = await self.call(ctx, "sale.order", "create", idempotent=False,
                                  vals_list=[{"partner_id": partner_id,
                                              "client_order_ref": order_ref,
                                              "order_line": order_lines}])
        return int(created[0])

    async def confirm_sale_order(self, ctx: StepContext | None, order_id: int) -> None:
        """Quotation -> sales order; one already confirmed is left as it is."""
        if await self._state(ctx, "sale.order", order_id) in ("sale", "done"):
            return
        await self.call(ctx, "sale.order", "action_confirm", ids=[order_id])

    async def cancel_sale_order(self, ctx: StepContext | None, order_id: int) -> None:
        """Cancel the order, past Odoo's cancel wizard; one already cancelled is left."""
        if await self._state(ctx, "sale.order", order_id) == "cancel":
            return
        result = await self.call(ctx, "sale.order", "action_cancel", ids=[order_id],
                                 context={"disable_cancel_warning": True})
        if isinstance(result, dict):
            raise PermanentConnectorError(
                f"odoo: sale.order.action_cancel answered with the {result.get('res_model')} "
                f"wizard instead of cancelling order {order_id}")

    # --- credit notes -------------------------------------------------------------------

    async def create_credit_note(self, ctx: StepContext | None, *, ref: str, partner_id: int,
                                 lines: list[dict[str, Any]], reason: str) -> int:
        """A posted customer credit note (``out_refund``) with ``ref``, or the one made
        before. ``lines``: ``{"quantity", "unit_price"}`` or ``{"amount"}`` (quantity 1),
        in currency units, plus ``"sku"`` and/or a label ``"description"`` (or ``"name"``;
        default: the product's name, else ``reason``)."""
        found = await self.call(ctx, "account.move", "search_read",
                                domain=[["move_type", "=", "out_refund"], ["ref", "=", ref],
                                        ["state", "!=", "cancel"]],
                                fields=["state"], limit=1, order="id desc")
        if found:
            move_id, state = int(found[0]["id"]), str(found[0]["state"])
        else:
            checked = [_line(f"credit note {ref!r}", i, line, credit=True)
                       for i, line in enumerate(lines)]
            skus = [sku for sku, _, _ in checked if sku]
            products = await self._product_ids(ctx, skus) if skus else {}
            invoice_lines = []
            for (sku, qty, price), line in zip(checked, lines, strict=True):
                vals: dict[str, Any] = {"quantity": qty, "price_unit": price}
                if sku:
                    vals["product_id"] = products[sku]
                label = line.get("description") or line.get("name")
                if label or not sku:
                    vals["name"] = str(label or reason)
                invoice_lines.append([0, 0, vals])
            created = await self.call(ctx, "account.move", "create", idempotent=False,
                                      vals_list=[{"move_type": "out_refund",
                                                  "partner_id": partner_id, "ref": ref,
                                                  "narration": reason,
                                                  "invoice_line_ids": invoice_lines}])
            move_id, state = int(created[0]), "draft"
        if state == "draft":
            await self.call(ctx, "account.move", "action_post", ids=[move_id])
        return move_id

    # --- helpers ------------------------------------------------------------------------

    async def _state(self, ctx: StepContext | None, model: str, record_id: int) -> str:
        rows = await self.call(ctx, model, "read", ids=[record_id], fields=["state"])
        return str(rows[0]["state"])

    async def _product_ids(self, ctx: StepContext | None, skus: list[str]) -> dict[str, int]:
        """Product ids by internal reference; an unknown SKU is a permanent error."""
        wanted = sorted(set(skus))
        rows = await self.call(ctx, "product.product", "search_read",
                               domain=[["default_code", "in", wanted]],
                               fields=["default_code"])
        found = {row["default_code"]: int(row["id"]) for row in rows}
        missing = [sku for sku in wanted if sku not in found]
        if missing:
            raise PermanentConnectorError(
                f"odoo: unknown SKU {', '.join(missing)}: no active product.product has "
                "that internal reference (default_code)")
        return found


def _line(what: str, index: int, line: dict[str, Any], *, credit: bool = False,
          ) -> tuple[str, float, float]:
    """(sku, quantity, unit price) of one input line, or a permanent error naming it.

    A credit note line may omit the SKU, and may give one ``amount`` instead of quantity and
    unit price (quantity 1)."""
    sku = line.get("sku") or ""
    qty, price = line.get("quantity"), line.get("unit_price")
    if credit and qty is None and price is None and "amount" in line:
        qty, price = 1, line["amount"]
    if not isinstance(sku, str) or (not sku and not credit) \
            or not isinstance(qty, int | float) or isinstance(qty, bool) or qty <= 0 \
            or not isinstance(price, int | float) or isinstance(price, bool):
        needs = ("a quantity and a unit_price (or an amount)" if credit
                 else "a sku, a positive quantity and a unit_price")
        raise PermanentConnectorError(f"odoo: {what}: line {index} needs {needs}, got {line!r}")
    return sku, float(qty), float(price)


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """Odoo reads an empty field as ``false``; give ``None`` for all but boolean fields."""
    return {k: (None if v is False and k not in _BOOLEAN_FIELDS else v) for k, v in row.items()}


def _many2one_id(value: Any) -> int:
    """A many2one as ``read`` gives it (``[id, display_name]`` or ``false``) -> its id."""
    if isinstance(value, list) and value:
        return int(value[0])
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def _like_literal(text: str) -> str:
    r"""``text`` as a LIKE pattern matching only itself (``%``, ``_`` and ``\`` escaped)."""
    return re.sub(r"([\\%_])", r"\\\1", text)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@provides("erp")
def _build() -> OdooConnector:
    return OdooConnector(load_settings(OdooSettings))
