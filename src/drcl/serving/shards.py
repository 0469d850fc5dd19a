"""A database larger than one machine: shards served by several deployments, one router.

Each shard deployment serves this same model with one shard of the database (split by id range,
each built by `drcl index` on its part) under the same name in its own `index_root`. A router
deployment (model config `shards`: their URLs) embeds the queries once and asks every shard, in
parallel, in two rounds, so the answer is the one `drcl search --database S0 --database S1 ...`
gives with every shard in one process:

1. when the index expands queries (aQE), each shard's `neighbours` (its best `qe_k` matches with
   their vectors); the router moves each query towards the best of all of them;
2. each shard's top k for the (expanded) queries, without expanding again; merged by score.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from drcl.errors import DrclError
from drcl.rerank import Rerank
from drcl.search import expanded_over, merged


class ShardClient:
    """POSTs one request to every shard deployment at once; a shard that fails is one line."""

    def __init__(self, urls: Sequence[str], *, timeout_s: float) -> None:
        self.urls = [url.rstrip("/") for url in urls]
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.urls)),
                                        thread_name_prefix="drcl-shard")

    def ask(self, inputs: list[dict[str, Any]], params: dict[str, Any]) -> list[list[dict]]:
        """Every shard's answers (one per input), in the order of `urls`."""
        body = json.dumps({"inputs": inputs, "params": params}).encode()
        return list(self._pool.map(lambda url: self._post(url, body, len(inputs)), self.urls))

    def _post(self, url: str, body: bytes, expected: int) -> list[dict]:
        request = urllib.request.Request(url + "/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                answers = json.loads(response.read())["predictions"]
        except urllib.error.HTTPError as exc:
            raise DrclError(f"shard {url}: {_message(exc)}") from None
        except (OSError, ValueError, KeyError) as exc:  # refused, timed out, not JSON
            raise DrclError(f"shard {url}: no answer ({exc})") from None
        if not isinstance(answers, list) or len(answers) != expected:
            raise DrclError(f"shard {url}: expected {expected} answers, got "
                            f"{len(answers) if isinstance(answers, list) else 'none'}")
        return answers


def _message(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["message"]).splitlines()[0]
    except (ValueError, KeyError, IndexError):
        return f"HTTP {exc.code}"


def search_shards(client: ShardClient, database: str, queries: torch.Tensor,
                  modalities: Sequence[str], *, k: int, weights: set[str]
                  ) -> list[list[tuple[str, float]]]:
    """Each query's top k (id, score) over every shard of `database`, as `ranked_in` gives
    with the shards in one process. `weights`: the router's encoders' checksums; a shard whose
    part was built by another encoder is refused (its scores would not compare)."""
    q = torch.nn.functional.normalize(queries.detach().float().cpu(), dim=1)
    asked = client.ask(_inputs(q, modalities), {"database": database, "neighbours": True})
    for url, answers in zip(client.urls, asked, strict=True):
        built_by = answers[0].get("built_by") if answers else None
        if built_by not in weights:
            raise DrclError(f"shard {url}: its part of {database} was built by another encoder "
                            "than this router's set; serve one set version on the router and "
                            "every shard")
    settings = {json.dumps(a["rerank"], sort_keys=True) for answers in asked for a in answers}
    if len(settings) > 1:
        raise DrclError(f"params database: the shards of {database} differ in their re-ranking "
                        "setting; build every shard with the same set")
    setting = Rerank.from_dict(asked[0][0]["rerank"])
    if setting.qe_k:
        q = expanded_over(q, [_neighbours(answers, setting.qe_k, q.shape[1])
                              for answers in asked], setting)
    else:
        q = queries.detach().float().cpu()  # as ranked_in: no expansion, the query as it came
    found = client.ask(_inputs(q, modalities), {"database": database, "top_k": k,
                                                "expand": False})
    per_shard = [[[(m["id"], float(m["score"])) for m in a["matches"]] for a in answers]
                 for answers in found]
    return merged(per_shard, k, len(q))


def _inputs(q: torch.Tensor, modalities: Sequence[str]) -> list[dict[str, Any]]:
    return [{"modality": m, "embedding": row, "id": str(i)}
            for i, (m, row) in enumerate(zip(modalities, q.tolist(), strict=True))]


def _neighbours(answers: list[dict], qe_k: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One shard's neighbours as (scores, vectors) of shapes (n, qe_k) and (n, qe_k, width),
    a shard with fewer items padded with matches that weigh nothing."""
    scores = np.full((len(answers), qe_k), -np.inf, dtype=np.float32)
    vectors = np.zeros((len(answers), qe_k, width), dtype=np.float32)
    for i, answer in enumerate(answers):
        for j, match in enumerate(answer["matches"][:qe_k]):
            scores[i, j] = match["score"]
            vectors[i, j] = match["vector"]
    return scores, vectors
