"""`drcl serve`: MLflow's scoring server for a drcl model, behind a guard at its door.

The app is MLflow's own (`mlflow.pyfunc.scoring_server`: /ping, /health, /version,
/invocations), so answers are those of `mlflow models serve`. In front of it, the guard refuses
what the model would never see or cannot answer, each with a one-line JSON error: a body over
`--max-request-mb` (413, counted as it arrives, before anything is parsed), a body that is not a
JSON object with a list of `inputs`, and `params` keys the model does not take (MLflow would
drop them with a warning in its log and answer 200). A model that cannot load (a damaged or
tampered artifact) stops the server before it listens, and its log ends with drcl's line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from drcl.serving.schema import DEFAULT_PARAMS

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MODEL_ENV = "DRCL_SERVE_MODEL"
LIMIT_ENV = "DRCL_SERVE_MAX_REQUEST_MB"
CONFIG_ENV = "MLFLOW_PYFUNC_INFERENCE_CONFIG"  # the model config, as `mlflow models serve` reads it
REQUEST_KEYS = ("inputs", "params")


class RequestGuard:
    """ASGI middleware for POST /invocations: size first, then the request's shape."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or \
                scope["path"].rstrip("/") != "/invocations":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope["headers"]}
        declared = headers.get(b"content-length", b"").decode() or "0"
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _refuse(send, 413, self._too_large(int(declared)))
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await _refuse(send, 413, self._too_large(len(body), more=True))
                return
            if not message.get("more_body", False):
                break
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        problem = check_request(bytes(body)) if kind == b"application/json" else None
        if problem:
            await _refuse(send, 400, problem)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    def _too_large(self, size: int, *, more: bool = False) -> str:
        return (f"request: body of {size / 2**20:,.1f} MB{' and more' if more else ''} is over "
                f"this server's limit of {self.max_bytes / 2**20:,.1f} MB (drcl serve "
                "--max-request-mb); send fewer queries per request")


def check_request(body: bytes) -> str | None:
    """What is wrong with a JSON request body, in one line; None when the model may see it."""
    try:
        request = json.loads(body)
    except ValueError as exc:
        return f"request: the body is not JSON ({exc})"
    shape = ("the body is a JSON object with `inputs` (a list of queries, each with modality "
             "and features or text) and optional `params` (database, top_k)")
    if not isinstance(request, dict):
        return f"request: {shape}; got a JSON {type(request).__name__}"
    unknown = [k for k in request if k not in REQUEST_KEYS]
    if unknown or "inputs" not in request:
        found = ", ".join(map(repr, request)) or "none"
        return f"request: {shape}; found keys {found}"
    if not isinstance(request["inputs"], list):
        return f"request: `inputs` is a list of queries; got a JSON {_kind(request['inputs'])}"
    params = request.get("params") or {}
    if not isinstance(params, dict):
        return f"request: `params` is an object (database, top_k); got a JSON {_kind(params)}"
    unknown = [k for k in params if k not in DEFAULT_PARAMS]
    if unknown:
        return (f"request: unknown params {', '.join(map(repr, unknown))}; this model takes "
                f"{', '.join(DEFAULT_PARAMS)}")
    return None


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string"}.get(type(value), type(value).__name__)


async def _refuse(send: Send, status: int, message: str) -> None:
    code = "REQUEST_LIMIT_EXCEEDED" if status == 413 else "INVALID_PARAMETER_VALUE"
    body = json.dumps({"error_code": code, "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def load(model_uri: str) -> Any:
    """The pyfunc model with the deployment's model config (the environment variable that
    `mlflow models serve` reads, so one setting serves both)."""
    import mlflow

    from drcl.errors import DrclError
    from drcl.serving.model import SCORING_SERVER_ENV
    from drcl.serving.schema import serving_config

    os.environ.setdefault(SCORING_SERVER_ENV, model_uri)  # the model logs its arithmetic
    raw = os.environ.get(CONFIG_ENV) or "{}"
    try:
        given = json.loads(raw)
    except ValueError:
        raise DrclError(f"{CONFIG_ENV}: not JSON: {raw[:80]!r}") from None
    config = serving_config(given, source=CONFIG_ENV)  # checked here, named as the user set it
    return mlflow.pyfunc.load_model(model_uri, model_config=config.model_dump(exclude_unset=True))


def create_app(model: Any | None = None) -> ASGIApp:
    """The guarded scoring app; without `model`, it loads the one the environment names (each
    worker process of `drcl serve --workers N` does)."""
    from mlflow.pyfunc import scoring_server

    model = model if model is not None else load(os.environ[MODEL_ENV])
    max_bytes = int(float(os.environ.get(LIMIT_ENV, "16")) * 2**20)
    return RequestGuard(scoring_server.init(model), max_bytes=max_bytes)
