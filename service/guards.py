"""Request guards as plain ASGI middleware, so they also cover mounted apps (the annotation pages):
an optional API key, a request body size limit, and the slots that bound concurrent generation."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading

from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = ("/healthz", "/readyz")  # health checks never need the key
BODY_METHODS = ("POST", "PUT", "PATCH")


async def send_json(send: Send, status: int, doc: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(doc).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    """The key from ``X-API-Key: K``, ``Authorization: Bearer K`` or Basic auth with password K
    (Basic lets a browser open /docs and the annotation pages through its own login prompt)."""
    if b"x-api-key" in headers:
        return headers[b"x-api-key"].decode("latin-1")
    auth = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, api_key: str | None):
        self.app, self.key = app, api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is None or scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        got = presented_key(dict(scope["headers"]))
        if got is not None and secrets.compare_digest(got.encode(), self.key.encode()):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send_json(
            send,
            401,
            {"detail": "missing or wrong API key: send it as 'X-API-Key: KEY' or 'Authorization: Bearer KEY'"},
            [(b"www-authenticate", b'Bearer, Basic realm="datasetgan"')],
        )


class BodyLimitMiddleware:
    """413 for bodies over the limit: by Content-Length up front, else while reading a chunked body.
    Bodies are small (JSON requests, mask uploads), so they are read in full before the app runs."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await send_json(send, 400, {"detail": "invalid Content-Length header"})
            if int(length) > self.max:
                return await send_json(
                    send, 413, {"detail": f"request body of {int(length)} bytes is over the limit of {self.max} bytes"}
                )
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            total += len(chunks[-1])
            if total > self.max:
                return await send_json(send, 413, {"detail": f"request body is over the limit of {self.max} bytes"})
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)


class Slots:
    """At most ``limit`` holders at once; acquiring never waits (the caller answers 429 instead)."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self._lock = threading.Lock()

    def try_acquire(self) -> "Slot | None":
        with self._lock:
            if self.used >= self.limit:
                return None
            self.used += 1
            return Slot(self)

    def _release(self) -> None:
        with self._lock:
            self.used -= 1


class Slot:
    def __init__(self, slots: Slots):
        self._slots, self._held = slots, True
        self._lock = threading.Lock()

    def release(self) -> None:
        """Idempotent: every path that ends a stream may call it."""
        with self._lock:
            if self._held:
                self._held = False
                self._slots._release()
