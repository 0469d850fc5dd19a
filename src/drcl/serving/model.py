"""The pyfunc model of a registered set or encoder: embed items, and search an index.

MLflow loads it from `model_code.py`; `load_context` checks every weight file against the
checksum in the version's manifest and the prior every member carries, as `drcl search` does.
Model config (`drcl.serving.schema.ServingConfig`): `device` and `precision`, `auto` by
default as in params.yaml, so a served model answers as `drcl search` does on the same machine.
"""

from __future__ import annotations

import os
import posixpath
import sys
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from drcl.errors import DrclError
from drcl.extract.manifest import Item
from drcl.registry import LoadedMember, Member, load_verified
from drcl.rerank import Rerank
from drcl.runtime import compute_dtype, resolve_device, resolved_precision
from drcl.search import Index, check_width, extract_raw, ranked_in, read_index
from drcl.serving.package import (
    ENCODER_FILE,
    MODEL_CONFIG,
    PAYLOAD,
    PRIOR_FILE,
    read_manifest,
)
from drcl.serving.schema import DEFAULT_PARAMS, Answer, Match, Query, serving_config
from drcl.serving.shards import ShardClient, search_shards

SCORING_SERVER_ENV = "__pyfunc_model_path__"  # set by `mlflow models serve` for its workers
# where a model config comes from, as a bad one is named
CONFIG_SOURCE = "model config (MLFLOW_PYFUNC_INFERENCE_CONFIG or load_model's model_config)"
REMOTE = ("s3://", "gs://", "http://", "https://", "runs:/", "models:/", "mlflow-artifacts:")

MAX_CACHED_INDEXES = 4
TEXT, EMBEDDING = 1, 2  # kinds of query input, as `_embed` groups them (0: features)


class RequestError(MlflowException):
    """A bad request: HTTP 400 with drcl's one-line message. MLflow's scoring server prefixes
    a failed prediction's message with the whole request (every feature value of every query);
    this message stays the line that says what is wrong."""

    def __init__(self, message: str) -> None:
        self._line = message
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._line

    @message.setter
    def message(self, value: str) -> None:
        pass  # keep the one line


class DrclModel(mlflow.pyfunc.PythonModel):
    """A set of encoders of one prior (one member for an encoder version)."""

    def load_context(self, context: Any) -> None:
        given = context.model_config if context.model_config is not None else {}
        if not isinstance(given, dict):
            given = serving_config(given, source=CONFIG_SOURCE)  # raises: not an object
        config = serving_config({**MODEL_CONFIG, **given}, source=CONFIG_SOURCE)
        self.device = resolve_device(config.device)
        dtype = compute_dtype(config.precision, self.device)
        folder = Path(context.artifacts[PAYLOAD])
        manifest = read_manifest(folder)
        self.members: dict[str, LoadedMember] = {}
        self.weights_sha256: dict[str, str] = {}
        for modality, entry in manifest["members"].items():
            member = Member(modality, entry["model"], entry["version"])
            weights = folder / modality / ENCODER_FILE
            encoder = load_verified(weights, folder / PRIOR_FILE, what=member.describe(),
                                    weights_sha256=entry["weights_sha256"],
                                    prior_sha256=manifest["prior_sha256"], device=self.device,
                                    compute_dtype=dtype)
            self.members[modality] = LoadedMember(member, encoder, weights, entry["extractor"])
            self.weights_sha256[modality] = entry["weights_sha256"]
        self.dtype = dtype
        # the arithmetic, said once in a deployment's log (MLflow's scoring server names the
        # model it serves in this variable; a model loaded in-process stays quiet)
        arithmetic = resolved_precision(config.precision, self.device)
        served = ", ".join(m.member.describe() for m in self.members.values())
        if os.environ.get(SCORING_SERVER_ENV):
            print(f"drcl: serving {served} on {self.device.type} in {arithmetic} (model config "
                  f"precision {config.precision}; MLFLOW_PYFUNC_INFERENCE_CONFIG overrides "
                  "it)", file=sys.stderr, flush=True)
        self._databases: OrderedDict[str, Index] = OrderedDict()
        self._lock = threading.Lock()  # the scoring server answers requests on several threads
        self.indexes = config.allowed_indexes()
        self.index_root = config.index_root
        self.max_index_bytes = int(config.max_index_mb * 2**20)
        self.max_top_k = config.max_top_k
        self.shards = (ShardClient(config.shards, timeout_s=config.shard_timeout_s)
                       if config.shards else None)

    def predict(self, context: Any, model_input: list[Query],
                params: dict[str, Any] | None = None) -> list[Answer]:
        """Embed each query, or (with params `database`) rank the database for it."""
        try:
            return self.answer(model_input, {**DEFAULT_PARAMS, **(params or {})})
        except DrclError as exc:  # the request's fault: a 400 with the one line
            raise RequestError(str(exc)) from None

    def answer(self, queries: list[Query], params: dict[str, Any]) -> list[Answer]:
        if not queries:
            raise DrclError("request: no queries")
        database = str(params.get("database") or "")
        k = int(params.get("top_k", DEFAULT_PARAMS["top_k"]))
        if database and k < 1:
            raise DrclError(f"request: params top_k must be at least 1, got {k}")
        if database and k > self.max_top_k:
            raise DrclError(f"request: params top_k {k} is over this deployment's "
                            f"{self.max_top_k} matches per query (model config `max_top_k`)")
        names = [q.id if q.id is not None else str(i) for i, q in enumerate(queries)]
        embedded = self._embed(queries, names)
        if not database:
            return [Answer(query=n, modality=q.modality, embedding=e.tolist())
                    for n, q, e in zip(names, queries, embedded, strict=True)]
        stacked = torch.stack([e.float() for e in embedded])
        if self.shards is not None:  # a router: the shards hold the database
            if not self.allowed(self.resolved(database)):
                raise self._refuse(database)
            found = search_shards(self.shards, database, stacked,
                                  [q.modality for q in queries], k=k,
                                  weights=set(self.weights_sha256.values()))
        else:
            db = self._database(database)
            setting = Rerank.from_dict(db.meta.get("rerank"))
            if params.get("neighbours"):
                return self._neighbours(db, stacked, setting, names, queries)
            found = ranked_in([db.vectors], stacked,
                              setting if params.get("expand", True) else Rerank(), k=k,
                              device=self.device)
        return [Answer(query=n, modality=q.modality,
                       matches=[Match(rank=r, id=i, score=round(s, 6))
                                for r, (i, s) in enumerate(matches, 1)])
                for n, q, matches in zip(names, queries, found, strict=True)]

    def _neighbours(self, db: Index, queries: torch.Tensor, setting: Rerank,
                    names: list[str], asked: list[Query]) -> list[Answer]:
        """What a router needs of this shard to expand queries over every shard: the index's
        setting and, when it expands, each query's best `qe_k` matches with their vectors
        (scores unrounded, so the router's arithmetic is the in-process one)."""
        rows: list[list[Match]] = [[] for _ in asked]
        if setting.qe_k and db.vectors.size:
            q = torch.nn.functional.normalize(queries.detach().float().cpu(), dim=1)
            db.vectors.check_width(q.shape[1], "query")
            scores, slots, vectors = db.vectors.search_and_reconstruct(
                q.numpy(), setting.qe_k, device=self.device)
            rows = [[Match(rank=r, id=db.vectors.id_of(j), score=float(sc), vector=v.tolist())
                     for r, (j, sc, v) in enumerate(zip(row_j.tolist(), row_s.tolist(), row_v,
                                                        strict=True), 1) if j >= 0]
                    for row_s, row_j, row_v in zip(scores, slots, vectors, strict=True)]
        built_by = str(db.meta.get("weights_sha256") or "")
        return [Answer(query=n, modality=q.modality, matches=m, rerank=setting.as_dict(),
                       built_by=built_by)
                for n, q, m in zip(names, asked, rows, strict=True)]

    def _embed(self, queries: list[Query], names: list[str]) -> list[torch.Tensor]:
        """Each query's unit embedding, computed a modality (and a kind of input) at a time."""
        groups: dict[tuple[str, int], list[int]] = {}
        for i, (q, name) in enumerate(zip(queries, names, strict=True)):
            if q.modality not in self.members:
                raise DrclError(f"query {name}: no encoder for modality {q.modality!r} (this "
                                f"model has {', '.join(self.members)})")
            given = [q.features is not None, q.text is not None, q.embedding is not None]
            if sum(given) != 1:
                raise DrclError(f"query {name}: give one of features, text or embedding")
            groups.setdefault((q.modality, given.index(True)), []).append(i)
        out: list[torch.Tensor] = [torch.empty(0)] * len(queries)
        for (modality, kind), rows in groups.items():
            loaded = self.members[modality]
            if kind == EMBEDDING:
                for i in rows:
                    out[i] = self._embedding(queries[i], names[i], loaded)
                continue
            if kind == TEXT:
                if loaded.extractor != "minilm":
                    raise DrclError(f"query {names[rows[0]]}: the {modality} encoder takes "
                                    f"{loaded.encoder.spec.input_dim}-d {loaded.extractor} "
                                    "features, not text")
                items = [Item(where=f"query {names[i]}", id=names[i], modality=modality,
                              labels=(), text=queries[i].text) for i in rows]
                values = extract_raw(items, extractor=loaded.extractor, device=self.device,
                                     dtype=self.dtype)
            else:
                for i in rows:
                    check_width(loaded, len(queries[i].features or ()), f"query {names[i]}")
                values = np.asarray([queries[i].features for i in rows], dtype=np.float32)
                if not np.isfinite(values).all():
                    bad = next(names[i] for i, row in zip(rows, values, strict=True)
                               if not np.isfinite(row).all())
                    raise DrclError(f"query {bad}: features contain NaN or infinite values")
            embedded = loaded.encoder(torch.as_tensor(values).to(self.device)).detach()
            for i, row in zip(rows, embedded, strict=True):
                out[i] = row
        return out

    def _embedding(self, query: Query, name: str, loaded: LoadedMember) -> torch.Tensor:
        """A query given embedded: the set's common width, finite values."""
        width = loaded.encoder.spec.common_dim
        values = torch.tensor(query.embedding or (), dtype=torch.float32)
        if values.shape != (width,):
            raise DrclError(f"query {name}: an embedding of this set has {width} values, "
                            f"got {values.numel()}")
        if not torch.isfinite(values).all():
            raise DrclError(f"query {name}: embedding contains NaN or infinite values")
        return values.to(self.device)

    def allowed(self, reference: str) -> bool:
        """Whether a request may name this index: listed in `indexes`, or under `index_root`
        (by default the server's working directory, local files only), with no way out of it
        by `..`."""
        if reference in self.indexes:
            return True
        remote = reference.startswith(REMOTE) or "://" in reference
        root = self.index_root or ("" if remote else os.getcwd())
        if not root:
            return False
        if remote or root.startswith(REMOTE):
            prefix = root.rstrip("/") + "/"
            return reference.startswith(prefix) and ".." not in reference.split("/")
        base = Path(root).resolve()
        return Path(reference).resolve().is_relative_to(base)

    def _refuse(self, reference: str) -> DrclError:
        named = ", ".join(self.indexes) or "none by name"
        root = self.index_root or "the server's working directory (local files)"
        return DrclError(f"params database: {reference} is not an index this deployment "
                         f"serves; allowed: {named}; and any under {root} (model config "
                         "`indexes`, `index_root`)")

    def resolved(self, reference: str) -> str:
        """A request's index: a relative path names a file under `index_root` when one is set
        (so shard deployments read each their own part under one name), else under the
        working directory."""
        if (not self.index_root or reference.startswith(REMOTE) or "://" in reference
                or Path(reference).is_absolute()):
            return reference
        if self.index_root.startswith(REMOTE) or "://" in self.index_root:
            return self.index_root.rstrip("/") + "/" + posixpath.normpath(reference)
        return str(Path(self.index_root) / reference)

    def _database(self, reference: str) -> Index:
        """An allowed index from `drcl index`, read once and kept (safe across threads)."""
        reference = self.resolved(reference)
        if not self.allowed(reference):
            raise self._refuse(reference)
        with self._lock:
            if reference in self._databases:
                self._databases.move_to_end(reference)
                return self._databases[reference]
            found = self._load(reference)
            self._databases[reference] = found
            while len(self._databases) > MAX_CACHED_INDEXES:
                self._databases.popitem(last=False)
            return found

    def _load(self, reference: str) -> Index:
        path = Path(reference)
        if reference.startswith(REMOTE) or "://" in reference:
            self._check_remote_size(reference)
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    path = Path(mlflow.artifacts.download_artifacts(reference, dst_path=tmp))
                except Exception as exc:  # noqa: BLE001 - any store's failure is one line
                    raise DrclError(f"params database: cannot fetch {reference} "
                                    f"({str(exc).splitlines()[0]})") from None
                index = self._read(path, reference)
        else:
            index = self._read(path, reference)
        modality = index.meta["modality"]
        member = self.members.get(modality)
        if member is None:
            raise DrclError(f"params database: {reference} is an index of {modality!r}; this "
                            f"model has {', '.join(self.members)}")
        made_by = index.meta.get("weights_sha256")
        same = made_by == self.weights_sha256[modality] if made_by else (
            (index.meta["model"], index.meta["version"]) == (member.member.model,
                                                             member.member.version))
        if not same:
            raise DrclError(f"params database: {reference} was built with {index.meta['model']} "
                            f"v{index.meta['version']}, not this model's {modality} encoder "
                            f"({member.member.describe()}); rebuild it with `drcl index`")
        return index

    def _check_remote_size(self, reference: str) -> None:
        """Refuse an index over the cap before fetching it, where the store lists sizes."""
        parent, _, name = reference.rstrip("/").rpartition("/")
        try:
            listed = mlflow.artifacts.list_artifacts(artifact_uri=parent)
        except Exception:  # noqa: BLE001 - a store that cannot list: the size is checked after
            return
        sizes = {Path(f.path).name: f.file_size for f in listed if not f.is_dir}
        size = sizes.get(name)
        if size is not None and size > self.max_index_bytes:
            raise DrclError(f"params database: {reference} holds {size / 2**20:,.0f} MB, over "
                            f"this deployment's cap of {self.max_index_bytes / 2**20:,.0f} MB "
                            "(model config `max_index_mb`)")

    def _read(self, path: Path, reference: str) -> Index:
        if not path.is_file():
            raise DrclError(f"params database: no index file at {reference}")
        size = path.stat().st_size
        if size > self.max_index_bytes:
            raise DrclError(f"params database: {reference} holds {size / 2**20:,.0f} MB, over "
                            f"this deployment's cap of {self.max_index_bytes / 2**20:,.0f} MB "
                            "(model config `max_index_mb`)")
        index = read_index(path)
        if index is None:
            raise DrclError(f"params database: {reference} is not an index; build one with "
                            "`drcl index`")
        return index
