"""The request body limit: a 413 with the API's JSON error body, before a byte is parsed.

A declared ``Content-Length`` over the limit is refused without reading the body; a body
sent without one (chunked) is counted as it arrives and refused once it passes the limit.
(Starlette's own limit answers in plain text, whatever the app would have said.)
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.api.problems import problem_response

DETAIL = "request body over {limit} bytes (HUB_API_MAX_BODY_BYTES)"


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` mid-body: an HTTPException, so FastAPI passes it to the
    API's handler (any other error while reading a body becomes a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, DETAIL.format(limit=limit))


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            response = problem_response(413, DETAIL.format(limit=self.limit),
                                        headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counting_receive, send)
