"""Which cheap criterion predicts whether standardising a modality's inputs helps retrieval?

    python benchmarks/quality/standardization.py [--seeds 0 1 2]

For every modality of the three benchmark data sets, each candidate criterion scores the
modality's features as given ("raw") and standardised with training-split statistics, fitting on
the training split and scoring each validation item. A criterion chooses standardisation when its
mean per-item gain is at least MIN_Z standard errors (else the features stay as given, as the
method's authors feed them). The reference is the validation search that trained the full
method both ways per modality (`run.py DATASET --search-per-modality standardize`: validation
MAP@all of the directions involving the modality); report.py puts both side by side.

Candidates: nearest class mean (cosine), k-nearest neighbours (k = 10, cosine and Euclidean),
a ridge-regression linear probe (closed form, lambda 1), and the trained probe that
`model.standardize: auto` uses (drcl.standardization). Results go to results/standardization.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import RESULTS, base_params, prepare, save, with_overrides  # noqa: E402

from drcl.data.dataset import ModalityData  # noqa: E402
from drcl.errors import DrclError  # noqa: E402
from drcl.model import input_statistics  # noqa: E402
from drcl.runtime import resolve_device  # noqa: E402
from drcl.standardization import MIN_Z, paired_gain, probe_scores  # noqa: E402

DATASETS = ("uci_mfeat", "wikipedia_lda", "wikipedia_minilm")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def _similarity(a: np.ndarray, b: np.ndarray, cosine: bool) -> np.ndarray:
    if cosine:
        return _unit(a) @ _unit(b).T
    return 2 * a @ b.T - (a ** 2).sum(1)[:, None] - (b ** 2).sum(1)[None]


def nearest_class_mean(train, y_train, val, y_val) -> np.ndarray:
    means = (y_train.T @ train) / np.clip(y_train.sum(0)[:, None], 1, None)
    return (_similarity(val, means, True).argmax(1) == y_val.argmax(1)).astype(float)


def knn(train, y_train, val, y_val, *, cosine: bool, k: int = 10) -> np.ndarray:
    nearest = np.argsort(-_similarity(val, train, cosine), axis=1, kind="stable")[:, :k]
    return (y_train[nearest].sum(1).argmax(1) == y_val.argmax(1)).astype(float)


def ridge(train, y_train, val, y_val, *, lam: float = 1.0) -> np.ndarray:
    x = np.hstack([train, np.ones((len(train), 1))])
    w = np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y_train)
    scores = np.hstack([val, np.ones((len(val), 1))]) @ w
    return (scores.argmax(1) == y_val.argmax(1)).astype(float)


CLOSED_FORM = {
    "nearest class mean (cosine)": nearest_class_mean,
    "10-NN (cosine)": lambda *a: knn(*a, cosine=True),
    "10-NN (Euclidean)": lambda *a: knn(*a, cosine=False),
    "ridge probe (lambda 1)": ridge,
}
TRAINED = "trained probe (drcl: model.standardize auto)"


def criteria(data: ModalityData, params, device: torch.device) -> dict[str, dict]:
    """Per criterion: mean scores of both variants, the paired gain, its stderr, the choice."""
    mean, std = (t.numpy().astype(np.float64)
                 for t in input_statistics(data.train.features, standardize=True))
    variants = {"raw": lambda x: x.astype(np.float64),
                "standardized": lambda x: (x.astype(np.float64) - mean) / std}
    out = {}
    for name, criterion in CLOSED_FORM.items():
        start = time.perf_counter()
        scores = {v: criterion(f(data.train.features), data.train.labels,
                               f(data.val.features), data.val.labels)
                  for v, f in variants.items()}
        out[name] = _verdict(scores, time.perf_counter() - start)
    start = time.perf_counter()
    scores = {v: probe_scores(data, params, device, standardize=v == "standardized")
              for v in variants}
    out[TRAINED] = _verdict(scores, time.perf_counter() - start)
    return out


def _verdict(scores: dict[str, np.ndarray], seconds: float) -> dict:
    gain, stderr = paired_gain(scores["standardized"], scores["raw"])
    return {"raw": float(scores["raw"].mean()),
            "standardized": float(scores["standardized"].mean()), "gain": gain, "stderr": stderr,
            "standardize": bool(gain > 0 and gain >= MIN_Z * stderr), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="seeds of the trained probe (the closed forms have none)")
    args = parser.parse_args()
    out_path = RESULTS / "standardization.json"
    results: dict[str, dict] = {}
    for dataset in DATASETS:
        raw = base_params(dataset)
        with tempfile.TemporaryDirectory() as tmp:
            modalities, _ = prepare(dataset, raw, Path(tmp))
        for seed in args.seeds:
            params = with_overrides(raw, {}, seed)
            device = resolve_device(params.device)
            for data in modalities:
                key = f"{dataset} {data.name} seed={seed}"
                results[key] = {"dataset": dataset, "modality": data.name, "seed": seed,
                                "criteria": criteria(data, params, device)}
                chosen = results[key]["criteria"][TRAINED]
                print(f"{key}: trained probe gain {chosen['gain']:+.4f} "
                      f"(stderr {chosen['stderr']:.4f}) -> "
                      f"{'standardise' if chosen['standardize'] else 'as given'}",
                      file=sys.stderr, flush=True)
        save(results, out_path)


if __name__ == "__main__":
    try:
        main()
    except DrclError as exc:
        sys.exit(f"error: {exc}")
