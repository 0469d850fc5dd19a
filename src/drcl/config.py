"""The single schema of params.yaml: every entry point loads this validated object.

Unknown keys, wrong types and out-of-range values are rejected with a message naming the key.
Checks that need the data (modality names, number of classes) run when the data set's manifest is
passed as validation context.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from drcl.credentials import credential_in, walk_strings
from drcl.errors import DrclError

PositiveFloat = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitRatios(_Strict):
    """Stratified split fractions for sources that come without their own split."""

    train: Annotated[float, Field(gt=0, lt=1)] = 0.6
    val: Annotated[float, Field(gt=0, lt=1)] = 0.2
    test: Annotated[float, Field(gt=0, lt=1)] = 0.2

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitRatios:
        if abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ValueError("train + val + test must sum to 1")
        return self


def _name_of_class(value: object) -> object:
    """A whole number names a class as its digits do: YAML and `dvc exp run -S` read
    `[3, 8]` as numbers, and the digits' classes are named "3" and "8"."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


ClassName = Annotated[str, BeforeValidator(_name_of_class)]


class DvcRef(_Strict):
    """A git repository whose DVC remote holds the data (`data.path` is a path inside it).

    `commit` pins `rev` to the commit it named when a run began (the Kubeflow pipeline's first
    task sets it, so every task reads the same data); people leave it out.
    """

    repo: Annotated[str, Field(min_length=1)]
    rev: Annotated[str, Field(min_length=1)] | None = None
    commit: Annotated[str, Field(pattern=r"^[0-9a-f]{40}$")] | None = None


class NoiseParams(_Strict):
    """Label noise injected into the training and validation labels by `prepare`, to measure
    what noisy labels cost (drcl.data.noise); test labels stay clean."""

    kind: Literal["none", "symmetric", "asymmetric"] = "none"
    rate: Annotated[float, Field(ge=0, lt=1)] = 0.0
    scope: Literal["per_modality", "shared"] = "per_modality"

    @model_validator(mode="after")
    def _rate_needs_a_kind(self) -> NoiseParams:
        if self.kind == "none" and self.rate > 0:
            raise ValueError(f"rate {self.rate} with kind none injects nothing; set "
                             "data.noise.kind to symmetric or asymmetric")
        return self


class DataParams(_Strict):
    """Where the features come from (stage `prepare`).

    `modalities` picks which of the source's modalities to use (all when null); dvc.yaml's
    per-modality training stages are generated from this list. With `dvc`, `path` names a
    DVC-tracked file or folder in that repository at `rev` (a branch is followed: each run
    resolves it afresh), read from the repository's DVC remote.

    Zero-shot retrieval: `unseen_classes` (names) or `unseen_class_count` (drawn with `seed`)
    leaves classes out of the training and validation splits of every modality; the test split
    keeps them (drcl.data.zero_shot). `class_text` gives a class a longer description than its
    name for the semantic prior.
    """

    source: Literal["uci_mfeat", "npz", "extracted", "prepared", "wikipedia_svcl",
                    "wikipedia_deep", "nus_wide", "inria_websearch", "xmedianet",
                    "xmedia"] = "uci_mfeat"
    path: Path | None = None
    dvc: DvcRef | None = None
    modalities: list[str] | None = None
    split: SplitRatios = SplitRatios()
    noise: NoiseParams = NoiseParams()
    unseen_classes: list[ClassName] | None = None
    unseen_class_count: Annotated[int, Field(ge=1)] | None = None
    class_text: dict[ClassName, Annotated[str, Field(min_length=1)]] = \
        Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_way_to_hold_out(self) -> DataParams:
        if self.unseen_classes is not None and self.unseen_class_count is not None:
            raise ValueError("data.unseen_classes names the held-out classes and "
                             "data.unseen_class_count draws them; set one of the two")
        names = self.unseen_classes
        if names is not None and (not names or len(set(names)) != len(names)):
            raise ValueError("data.unseen_classes: list each class once (or leave it null)")
        held_out = self.unseen_classes is not None or self.unseen_class_count is not None
        if held_out and self.noise.kind != "none":
            raise ValueError("data.noise with unseen classes: noise is measured on the full "
                             "label set; run the two settings apart")
        return self

    @model_validator(mode="after")
    def _path_when_needed(self) -> DataParams:
        if self.source not in ("uci_mfeat", "extracted") and self.path is None:
            raise ValueError(f"data.path is required when data.source is {self.source!r}")
        if self.dvc is not None:
            if self.source in ("uci_mfeat", "extracted") or self.path is None:
                raise ValueError("data.dvc names where data.path lives; it needs a data.source "
                                 "that reads data.path (npz, prepared or a benchmark format)")
            if self.path.is_absolute() or ".." in self.path.parts:
                raise ValueError(f"data.path: {str(self.path)!r} must be a path inside the "
                                 "repository data.dvc.repo, relative to its root")
        return self

    @field_validator("path", mode="before")
    @classmethod
    def _not_a_url(cls, value: object) -> object:
        if isinstance(value, str) and "://" in value:
            raise ValueError(f"{value!r} is a URL, which no step can read; a file on S3 is "
                             "read through DVC: dvc add and push it, then set data.dvc: "
                             "{repo, rev} and data.path to its path in that repository")
        return value

    @model_validator(mode="after")
    def _unique_modalities(self) -> DataParams:
        if self.modalities is not None and len(set(self.modalities)) != len(self.modalities):
            raise ValueError("data.modalities: each modality may appear once")
        return self


Standardize = bool | Literal["auto"]


def _standardize_setting(value: object) -> object:
    """Only auto, true or false: pydantic would otherwise read 'yes' or 1 as true."""
    if isinstance(value, bool) or value == "auto":
        return value
    raise ValueError(f"expected auto, true or false, got {value!r}")


class ModelParams(_Strict):
    """Encoder shape, shared by every modality (only the input width differs).

    `standardize: auto` lets each modality's own validation split decide whether its inputs are
    standardised (drcl.standardization); `standardize_per_modality` overrides it by name.
    """

    hidden_dim: Annotated[int, Field(ge=1)] = 1024
    common_dim: Annotated[int, Field(ge=1)] = 512
    standardize: Standardize = "auto"
    standardize_per_modality: dict[str, Standardize] = Field(default_factory=dict)

    @field_validator("standardize", mode="before")
    @classmethod
    def _one_setting(cls, value: object) -> object:
        return _standardize_setting(value)

    @field_validator("standardize_per_modality", mode="before")
    @classmethod
    def _settings(cls, value: object) -> object:
        if isinstance(value, dict):
            for name, setting in value.items():
                try:
                    _standardize_setting(setting)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        return value

    def standardize_for(self, modality: str) -> Standardize:
        """A modality's setting: its override, else the global one (auto, true or false)."""
        return self.standardize_per_modality.get(modality, self.standardize)


class PriorParams(_Strict):
    """Stage 1: how the class prior W is obtained.

    `score_split: val` scores each candidate on held-out items instead of the training items the
    method uses, so a modality that merely memorises its training set does not win.
    """

    method: Literal["spl", "orthogonal", "semantic"] = "spl"
    """`semantic`: W's columns are the class texts' MiniLM embeddings mapped into the common
    space by a fixed seeded isometry (drcl.semantics), so a class unseen in training, or added
    later, has a column too."""
    spl_snapshot: Literal["best", "last"] = "best"
    score_split: Literal["train", "val"] = "train"
    lr: PositiveFloat = 5e-4


class MixupParams(_Strict):
    """Feature augmentation: a fixed mixing weight g, or g drawn from Beta(a, a) per batch."""

    kind: Literal["fixed", "beta"] = "fixed"
    g: Annotated[float, Field(ge=0, le=1)] = 0.9
    beta_a: PositiveFloat = 2.0


class CorrectionParams(_Strict):
    """Label correction for noisy labels (drcl.correction): `partial_ot` transports a growing
    trusted share of each modality's training items onto the classes once per epoch after
    `warmup` epochs, and trains on the items it carries. `cost: cross_modal` (paired data)
    blends in the other modalities' posteriors from the SPL stage at epoch `warmup`."""

    method: Literal["none", "partial_ot"] = "none"
    warmup: Annotated[int, Field(ge=1)] = 10
    mass_start: Annotated[float, Field(gt=0, le=1)] = 0.5
    mass_end: Annotated[float, Field(gt=0, le=1)] = 0.9
    eps: PositiveFloat = 0.05
    relabel: bool = False
    cost: Literal["own", "cross_modal"] = "own"

    @model_validator(mode="after")
    def _mass_grows(self) -> CorrectionParams:
        if self.mass_end < self.mass_start:
            raise ValueError(f"mass_end {self.mass_end} < mass_start {self.mass_start}; the "
                             "trusted share grows over training")
        return self


class TrainParams(_Strict):
    """Stage 2: RSC training of each modality's encoder (epochs and batch also drive SPL)."""

    epochs: Annotated[int, Field(ge=1)] = 60
    batch_size: Annotated[int, Field(ge=1)] = 256
    lr: PositiveFloat = 3e-4
    lr_per_modality: dict[str, PositiveFloat] = Field(default_factory=dict)
    alpha: Annotated[float, Field(ge=0)] = 0.1
    beta: Annotated[float, Field(ge=0)] = 0.1
    mixup: MixupParams = MixupParams()
    use_fa: bool = True
    use_mrr: bool = True
    mse_reduction: Literal["mean", "sum"] = "mean"
    selection: Literal["val_loss", "target_map"] = "val_loss"
    label_loss: Literal["gce", "ce"] = "gce"
    correction: CorrectionParams = CorrectionParams()
    ensemble: Annotated[int, Field(ge=1, le=32)] = 1
    """Encoders trained per modality from different seeds (drcl.ensemble); they embed as
    one, the normalised mean of their embeddings. 1: a single encoder, the method's."""
    hidden_dim: Annotated[int, Field(ge=1)] | None = None
    """The encoder's hidden width in RSC; null: model.hidden_dim. W's shape does not depend on
    it, so one modality's (`per_modality`) or `drcl tune`'s width retrains against the same
    prior; the encoder file records its width."""
    targets: Literal["auto", "recast", "class"] = "auto"
    """Where J_MSE and J_D pull an item: `recast` y W_pinv (MRR), `class` y W^T (its class's
    column itself; the same for an orthonormal W); `auto`: class under a semantic prior."""

    per_modality: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Any of these keys set for one modality only, e.g. {mor: {lr: 1.0e-3, alpha: 0.2}}:
    where `drcl tune` writes what it found. Only the train stages read it, so changing it
    retrains encoders against the same prior."""

    def lr_for(self, modality: str) -> float:
        return self.lr_per_modality.get(modality, self.lr)

    def for_modality(self, modality: str) -> TrainParams:
        """These settings as `modality`'s encoder trains with them: its `per_modality` entry
        over the shared values, and `lr_per_modality` where that entry names no lr."""
        override = self.per_modality.get(modality)
        if not override and modality not in self.lr_per_modality:
            return self
        base = self.model_dump(mode="json", exclude={"per_modality"})
        base["lr"] = self.lr_for(modality)
        return TrainParams.model_validate(deep_merge(base, override or {}))

    @field_validator("per_modality")
    @classmethod
    def _overrides_are_train_keys(cls, value: dict[str, dict[str, Any]]
                                  ) -> dict[str, dict[str, Any]]:
        for modality, override in value.items():
            if not isinstance(override, dict):
                raise ValueError(f"{modality}: expected a mapping of train keys, "
                                 f"got {override!r}")
            for key in ("per_modality", "lr_per_modality"):
                if key in override:
                    raise ValueError(f"{modality}.{key}: not settable per modality")
            try:
                TrainParams.model_validate(deep_merge(TrainParams().model_dump(mode="json"),
                                                       override))
            except ValidationError as exc:
                raise ValueError(one_line(modality, exc).replace(": ", ".", 1)) from None
        return value

    @model_validator(mode="after")
    def _correction_has_epochs(self) -> TrainParams:
        if self.correction.method != "none" and self.correction.warmup >= self.epochs:
            raise ValueError(f"correction.warmup: {self.correction.warmup} warm-up epochs "
                             f"leave none of train.epochs {self.epochs} to correct labels in")
        return self


TUNABLE: dict[str, type] = {
    "train.lr": float, "train.alpha": float, "train.beta": float, "train.mixup.g": float,
    "train.mixup.beta_a": float, "train.epochs": int, "train.batch_size": int,
    "train.mixup.kind": str, "train.use_fa": bool, "train.use_mrr": bool,
    "train.label_loss": str, "train.selection": str, "train.hidden_dim": int,
}
"""Keys `tune.space` may search: the train stage's, settable per modality, so a tuned value
retrains the encoders against the same prior."""


class SearchRange(_Strict):
    """One key's range: `low`..`high` (on a log scale with `log`), or a list of `choices`."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[str | bool | int | float] | None = None

    @model_validator(mode="after")
    def _a_range_or_choices(self) -> SearchRange:
        if self.choices is not None:
            if not self.choices:
                raise ValueError("choices: empty; list at least one value")
            if self.low is not None or self.high is not None:
                raise ValueError("give low and high, or choices, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("expected low and high (a range) or choices (a list)")
        if not self.low < self.high:
            raise ValueError(f"empty or inverted range: low {self.low} >= high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log: a log-scale range needs low > 0, got {self.low}")
        return self


def _default_space() -> dict[str, SearchRange]:
    return {"train.lr": SearchRange(low=1e-4, high=3e-3, log=True),
            "train.alpha": SearchRange(low=0.0, high=0.5),
            "train.beta": SearchRange(low=0.0, high=0.5),
            "train.mixup.g": SearchRange(low=0.6, high=1.0)}


class TuneParams(_Strict):
    """`drcl tune`: Optuna's search over `space` for the best validation MAP@all (on
    `promotion.split`'s validation items, never test), the prior fixed."""

    space: dict[str, SearchRange] = Field(default_factory=_default_space)
    strategy: Literal["coordinate", "joint"] = "coordinate"
    """coordinate: each modality's values searched alone, against the others' best encoders so
    far (the prior fixed, each modality trains alone); joint: one set of values for all."""
    trials: Annotated[int, Field(ge=1)] = 16
    """Trials per search: per modality (coordinate), or in all (joint; each trains every
    modality, so the same number costs the same training time)."""
    timeout_s: PositiveFloat | None = None
    pruning: bool = True
    storage: str | None = None
    """An Optuna storage URL (the cluster's PostgreSQL); null: sqlite tune/study.db."""
    study: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] = "drcl"
    workers: Annotated[int, Field(ge=1, le=64)] = 4
    """Parallel trial workers of the Kubeflow tuning pipeline (`drcl pipeline run --tune`),
    each on a GPU node, all on the one study in `storage`."""

    @field_validator("space")
    @classmethod
    def _known_keys(cls, value: dict[str, SearchRange]) -> dict[str, SearchRange]:
        if not value:
            raise ValueError("empty; name at least one key, e.g. train.lr: {low: 1.0e-4, "
                             "high: 3.0e-3, log: true}")
        for key, spec in value.items():
            if key not in TUNABLE:
                raise ValueError(f"{key}: unknown key; tunable: {', '.join(TUNABLE)}")
            values = spec.choices if spec.choices is not None else [spec.low, spec.high]
            if TUNABLE[key] is int and spec.choices is None and \
                    not all(float(v).is_integer() for v in values):
                raise ValueError(f"{key}: an integer key needs whole-number low and high")
            for v in values:  # each end must be a valid value of the key itself
                override = _at(key.removeprefix("train."), int(v) if TUNABLE[key] is int
                               and spec.choices is None else v)
                try:
                    TrainParams.model_validate(deep_merge(TrainParams().model_dump(
                        mode="json", exclude={"per_modality"}), override))
                except ValidationError as exc:
                    raise ValueError(f"{key}: {v!r} is not a value it takes "
                                     f"({exc.errors()[0]['msg']})") from None
        return value


def _at(dotted: str, value: object) -> dict[str, Any]:
    """{a: {b: value}} from "a.b"."""
    *parents, last = dotted.split(".")
    tree: dict[str, Any] = {last: value}
    for part in reversed(parents):
        tree = {part: tree}
    return tree


class RerankParams(_Strict):
    """Re-ranking at search time (drcl.rerank): the candidates `evaluate` chooses among on the
    validation split. Every combination is tried; 0 neighbours is off, and off wins ties."""

    dba_k: Annotated[list[Annotated[int, Field(ge=0, le=1000)]], Field(min_length=1)] = [0]
    qe_k: Annotated[list[Annotated[int, Field(ge=0, le=1000)]], Field(min_length=1)] = [0]
    alpha: Annotated[list[Annotated[float, Field(gt=0, le=100)]], Field(min_length=1)] = [3.0]

    @property
    def enabled(self) -> bool:
        """Anything other than off among the candidates."""
        return any(self.dba_k) or any(self.qe_k)


class EvaluateParams(_Strict):
    """Retrieval evaluation on the test split."""

    k: Annotated[int, Field(ge=1)] = 50
    query_chunk: Annotated[int, Field(ge=1)] = 1024
    rerank: RerankParams = RerankParams()


class IndexParams(_Strict):
    """`drcl index`: exact search up to a size, above it an approximate index (faiss IVF) whose
    kind and probes are chosen by a recall target on held-back queries (drcl.vector_index)."""

    kind: Literal["auto", "flat", "ivf_flat", "ivf_sq8", "ivf_pq"] = "auto"
    recall_at_10: Annotated[float, Field(gt=0, le=1)] = 0.95
    exact_max_items: Annotated[int, Field(ge=0)] = 5000
    nlist: Annotated[int | None, Field(ge=1, le=65536)] = None
    train_sample: Annotated[int, Field(ge=1000)] = 100_000
    calibration_queries: Annotated[int, Field(ge=10, le=100_000)] = 1000


class TrackingParams(_Strict):
    """MLflow tracking of the stages that train or evaluate (off for quick local experiments).

    The store is MLFLOW_TRACKING_URI when set, else `mlflow.db` (sqlite) in the working folder.
    """

    enabled: bool = True
    experiment: Annotated[str, Field(min_length=1)] = "drcl"


class RegistryParams(_Strict):
    """The MLflow model registry: `<name>-encoder-<modality>` per encoder, `<name>-set` for sets."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] = "drcl"
    lock_wait_s: Annotated[float, Field(ge=0)] = 120.0
    # how long a commit lock lives without renewal; a holder paused longer loses it and commits
    # nothing (registry fencing), so it must exceed the longest stall you expect to survive
    lock_lease_s: Annotated[float, Field(ge=1)] = 300.0


class PromotionParams(_Strict):
    """The gate a candidate set must clear to become `champion`, on MAP@all of `split`.

    The validation split by default, so that promoting again and again does not select on the
    test split; the test figures are measured and reported all the same.
    """

    split: Literal["val", "test"] = "val"
    min_mean_map: Annotated[float, Field(ge=0, le=1)] = 0.5
    min_direction_map: Annotated[float, Field(ge=0, le=1)] = 0.2
    min_gain: Annotated[float, Field(ge=-1, le=1)] = 0.0


ExtractorName = Literal["minilm", "efficientnet_lite0", "precomputed"]


class ExtractParams(_Strict):
    """Stage `extract`: raw items listed in a manifest become a feature data set.

    With `manifest` null the stage has nothing to do, so the other sources pay nothing for it.
    `extractors` names a modality's extractor; a modality it does not name gets one from its
    items (texts: minilm, images: efficientnet_lite0, arrays: precomputed).
    """

    manifest: Path | None = None
    manifest_format: Literal["auto", "csv", "jsonl", "wikipedia_svcl"] = "auto"
    root: Path | None = None
    name: str | None = None
    classes: list[str] | None = None
    extractors: dict[str, ExtractorName] = Field(default_factory=dict)
    image_size: Annotated[int, Field(ge=32, le=1024)] = 192
    batch_size: Annotated[int, Field(ge=1)] = 32
    on_error: Literal["fail", "skip"] = "fail"

    @model_validator(mode="after")
    def _unique_classes(self) -> ExtractParams:
        if self.classes is not None and (not self.classes
                                         or len(set(self.classes)) != len(self.classes)):
            raise ValueError("extract.classes: class names must be non-empty and unique")
        return self


EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
_CREDENTIAL_WORDS = ("SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "TOKEN", "ACCESS_KEY",
                     "API_KEY", "CREDENTIAL", "PRIVATE_KEY", "AUTH")
_USERINFO = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s]*:[^/@\s]*@", re.IGNORECASE)


class GpuParams(_Strict):
    """What each training task asks of its node (kfp accelerator type and limit)."""

    accelerator: Annotated[str, Field(min_length=1)] = "nvidia.com/gpu"
    limit: Annotated[int, Field(ge=1)] = 1


Quantity = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")]


class TaskResources(_Strict):
    """CPU and memory a task asks for (requests) and may use at most (limits), in Kubernetes
    quantities ("500m", "2", "4Gi")."""

    cpu: Quantity = "1"
    memory: Quantity = "4Gi"
    cpu_limit: Quantity = "2"
    memory_limit: Quantity = "8Gi"


class ResourceParams(_Strict):
    """Per kind of task: `gpu_task` for the steps on GPU nodes (prior, train, and extract when
    it extracts), `evaluate` and `promote` for those two (they embed every modality's test
    split and rank it in blocks of evaluate.query_chunk queries), `task` for the rest."""

    task: TaskResources = TaskResources()
    gpu_task: TaskResources = TaskResources(cpu="4", memory="16Gi", cpu_limit="8",
                                            memory_limit="32Gi")
    evaluate: TaskResources = TaskResources(cpu="2", memory="8Gi", cpu_limit="4",
                                            memory_limit="16Gi")
    promote: TaskResources = TaskResources(cpu="2", memory="8Gi", cpu_limit="4",
                                           memory_limit="16Gi")


class Toleration(_Strict):
    """A Kubernetes toleration, so training pods may land on tainted GPU nodes."""

    key: Annotated[str, Field(min_length=1)]
    operator: Literal["Equal", "Exists"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class SecretRef(_Strict):
    """A Kubernetes Secret whose keys become environment variables of the same names."""

    name: Annotated[str, Field(min_length=1)]
    keys: Annotated[list[EnvName], Field(min_length=1)]


class KubeflowParams(_Strict):
    """`drcl pipeline`: how the pipeline runs on a cluster; read when compiling and submitting.

    Credentials never live here: tasks read them from the Kubernetes Secrets named in `secrets`.
    """

    host: str | None = None
    namespace: Annotated[str, Field(min_length=1)] | None = None
    experiment: Annotated[str, Field(min_length=1)] = "drcl"
    pipeline: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")] = "drcl"
    image: Annotated[str, Field(pattern=r"^\S+$")] = "drcl:latest"
    pipeline_root: str | None = None
    store: str | None = None
    """Where tasks keep their outputs by content hash and the record of each completed task
    (drcl.kfp.store); null: `<pipeline_root>/drcl-store`."""
    parallelism: Annotated[int, Field(ge=1)] = 6
    gpu: GpuParams = GpuParams()
    resources: ResourceParams = ResourceParams()
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    env: dict[EnvName, str] = Field(default_factory=dict)
    secrets: list[SecretRef] = Field(default_factory=list)

    @field_validator("env")
    @classmethod
    def _no_credentials_in_env(cls, env: dict[str, str]) -> dict[str, str]:
        for name, value in env.items():
            if any(word in name.upper() for word in _CREDENTIAL_WORDS):
                raise ValueError(f"{name} looks like a credential; put it in a Kubernetes "
                                 "Secret listed in kubeflow.secrets, never in params")
            if _USERINFO.match(value):
                raise ValueError(f"{name}: the URL carries a user name and password; give the "
                                 "URL without them and the credentials through a Secret in "
                                 "kubeflow.secrets (e.g. MLFLOW_TRACKING_USERNAME/PASSWORD)")
        return env


class Params(_Strict):
    """Everything in params.yaml."""

    seed: Annotated[int, Field(ge=0)] = 0
    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")] = "auto"
    precision: Literal["fp32", "tf32", "bf16", "auto"] = "auto"
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    prior: PriorParams = PriorParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    tracking: TrackingParams = TrackingParams()
    registry: RegistryParams = RegistryParams()
    promotion: PromotionParams = PromotionParams()
    extract: ExtractParams = ExtractParams()
    tune: TuneParams = TuneParams()
    index: IndexParams = IndexParams()
    kubeflow: KubeflowParams = KubeflowParams()

    @model_validator(mode="after")
    def _no_credentials(self) -> Params:
        """params.yaml is committed, compiled into pipelines and copied into MLflow tags."""
        for path, value in walk_strings(self.model_dump(mode="json")):
            why = credential_in(value)
            if why:
                raise ValueError(f"{path}: {why}; credentials never go in params: give them "
                                 "through the environment, on a cluster a Kubernetes Secret "
                                 "listed in kubeflow.secrets (infra/README.md)")
        return self

    @model_validator(mode="after")
    def _fits_the_data(self, info: ValidationInfo) -> Params:
        ctx = info.context or {}
        modalities = ctx.get("modalities") or self.data.modalities
        if modalities is not None:
            where = "the data set" if ctx.get("modalities") else "data.modalities"
            for key, names in (("train.lr_per_modality", self.train.lr_per_modality),
                               ("train.per_modality", self.train.per_modality),
                               ("model.standardize_per_modality",
                                self.model.standardize_per_modality)):
                unknown = [name for name in names if name not in modalities]
                if unknown:
                    raise ValueError(f"{key} names {', '.join(unknown)}, not in {where} "
                                     f"[{', '.join(modalities)}]; remove the override or add "
                                     "the modality")
        num_classes = ctx.get("num_classes")
        if num_classes is not None and self.model.common_dim < num_classes:
            raise ValueError(
                f"model.common_dim: {self.model.common_dim} is smaller than the number of "
                f"classes ({num_classes}); the prior W needs common_dim >= classes"
            )
        return self


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override`'s keys set; nested mappings merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def one_line(source: str, exc: ValidationError) -> str:
    """A validation error as one line: `source: key: what was wrong; ...`."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return f"{source}: " + "; ".join(parts)


def parse_params(raw: object, *, source: str = "params.yaml",
                 modalities: list[str] | None = None,
                 num_classes: int | None = None) -> Params:
    """Validate a mapping; raise DrclError naming the offending key."""
    context = {"modalities": modalities, "num_classes": num_classes}
    try:
        return Params.model_validate(raw if raw is not None else {}, context=context)
    except ValidationError as exc:
        raise DrclError(one_line(source, exc)) from None


def for_data(params: Params, *, modalities: list[str] | None = None,
             num_classes: int | None = None) -> Params:
    """The same params, checked against a data set: modality names and number of classes."""
    return parse_params(params.model_dump(mode="json"), modalities=modalities,
                        num_classes=num_classes)


def load_params(path: str | Path = "params.yaml", **context: object) -> Params:
    """Read and validate params.yaml (see parse_params for the data-dependent checks)."""
    path = Path(path)
    if not path.is_file():
        raise DrclError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DrclError(f"{path}: not UTF-8 text (byte {exc.start}); params files are UTF-8 "
                        "YAML") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DrclError(f"{where}: not valid YAML ({problem})") from None
    if raw is None:  # `dvc repro` refuses an empty params file too
        raise DrclError(f"{path}: empty params file; expected a mapping of params groups "
                        "(the project's params.yaml shows every one)")
    if not isinstance(raw, dict):
        raise DrclError(f"{path}: expected a mapping of params groups, got a "
                        f"{type(raw).__name__}")
    return parse_params(raw, source=str(path), **context)  # type: ignore[arg-type]
