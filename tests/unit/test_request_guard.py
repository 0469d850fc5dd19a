"""drcl serve's guard alone, as an ASGI middleware: a body is counted as it arrives (a chunked
request declares no length), the model's app sees the body whole and unchanged, and each
refusal is one line of JSON."""

from __future__ import annotations

import asyncio
import json

import pytest

from drcl.serving.server import RequestGuard, check_request


def call(guard: RequestGuard, chunks: list[bytes], headers: list[tuple[bytes, bytes]]):
    sent: list[dict] = []
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
               for i, c in enumerate(chunks)]

    async def receive():
        return pending.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": headers}
    asyncio.run(guard(scope, receive, send))
    return sent


def test_a_chunked_body_is_refused_once_it_passes_the_limit():
    seen: list[bytes] = []

    async def model_app(scope, receive, send):
        seen.append((await receive())["body"])

    guard = RequestGuard(model_app, max_bytes=1000)
    chunks = [b'{"inputs": [' + b" " * 400] + [b" " * 400] * 5
    sent = call(guard, chunks, [(b"content-type", b"application/json")])
    assert sent[0]["status"] == 413 and not seen
    assert json.loads(sent[1]["body"])["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    # under the limit, the app gets the body as sent, in one piece
    body = json.dumps({"inputs": [{"modality": "image", "features": [1.0]}]}).encode()
    assert call(guard, [body[:10], body[10:]], [(b"content-type", b"application/json")]) == []
    assert seen == [body]


@pytest.mark.parametrize(("body", "message"), [
    (b"{", "request: the body is not JSON"),
    (b"[1]", "got a JSON list"),
    (b'{"inputs": [], "params": {"top_k": 3, "k": 1}}',
     "request: unknown params 'k'; this model takes database, top_k, expand, neighbours"),
    (b'{"inputs": [], "params": [1]}', "`params` is an object (database, top_k); got a JSON "
                                       "array"),
    (b'{"dataframe_split": {}}', "found keys 'dataframe_split'"),
])
def test_each_malformed_body_gets_its_line(body, message):
    problem = check_request(body)
    assert problem is not None and message in problem and "\n" not in problem
    assert check_request(b'{"inputs": [], "params": {"database": "a.npz", "top_k": 3}}') is None
