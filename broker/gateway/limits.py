"""Request body size limit: 413 as a problem, checked on Content-Length before reading and
while reading a body sent without one (chunked), so nobody can make the gateway buffer more
than `max_body_bytes`."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.gateway.problems import Problem, problem_response


def too_large(limit: int) -> Problem:
    return Problem(
        413,
        "body-too-large",
        "The request body is too large",
        f"the body may be at most {limit} bytes",
    )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    response = problem_response(too_large(self.max_bytes), scope.get("path"))
                    await response(scope, receive, send)
                    return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Raised inside the handler's body read (FastAPI re-raises HTTPException
                    # from its own body parsing); the problem handlers answer it.
                    raise HTTPException(413, too_large(self.max_bytes).detail)
            return message

        await self.app(scope, limited_receive, send)
