"""The real extractors on real offline inputs (scikit-learn's two photos and 8x8 digits, and
sentences written here), with every network connection refused: the features must be real and
must come from the packaged weights alone. Images use small sizes to keep this quick."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drcl.config import ExtractParams, Params
from drcl.extract import FEATURES_FILE
from drcl.extract.step import extract_dataset

pytest.importorskip("sentence_transformers", reason="the minilm extractor's packages are missing")
pytest.importorskip("efficientnet_lite_pytorch", reason="the efficientnet extractor's packages "
                                                        "are missing")
SIZE = 96


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Refuse every connection that leaves the machine, and switch the hub off."""
    connect = socket.socket.connect

    def local_only(sock, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"network access to {address[0]} refused by the test")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """The two sample photos, a crop of the first, and sixteen digits (eight 0s, eight 1s)."""
    from sklearn.datasets import load_digits, load_sample_images

    folder = tmp_path_factory.mktemp("images")
    china, flower = load_sample_images().images
    Image.fromarray(china).save(folder / "china.jpg")
    Image.fromarray(flower).save(folder / "flower.png")
    Image.fromarray(china[40:400, 60:560]).save(folder / "china_crop.jpg")
    digits = load_digits(n_class=2)
    for i in range(16):
        k = int(np.flatnonzero(digits.target == i % 2)[i // 2])
        pixels = (digits.images[k] * 255 / 16).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"digit{i}.png")
    return folder


def extract(tmp_path: Path, rows: list[str], cache: Path | None = None, **params) -> tuple:
    manifest = tmp_path / "items.csv"
    manifest.write_text("\n".join(["id,modality,label,path,text,split", *rows]) + "\n")
    out = tmp_path / "extracted"
    report = extract_dataset(
        Params(seed=0, device="cpu",
               extract=ExtractParams(manifest=manifest, image_size=SIZE, **params)),
        out_dir=out, cache_dir=cache or tmp_path / "cache")
    with np.load(out / FEATURES_FILE) as npz:
        return report, dict(npz)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


SENTENCES = [
    ("A man is playing the guitar on stage.", "s"),
    ("Someone performs a song with a guitar in front of an audience.", "s"),
    ("The central bank raised interest rates again this quarter.", "f"),
    ("Interest rates were increased by the central bank.", "f"),
]


def text_rows(sentences, split="train") -> list[str]:
    return [f"t{i},text,{label},,\"{text}\",{split}" for i, (text, label) in enumerate(sentences)]


def test_minilm_sentence_is_closest_to_its_paraphrase(tmp_path):
    (music, _), (music2, _), (bank, _), (bank2, _) = SENTENCES
    rows = [f't0,text,s,,"{music}",train', f't1,text,f,,"{bank}",train',
            f't2,text,s,,"{music2}",val', f't3,text,f,,"{bank2}",test']
    _, arrays = extract(tmp_path, rows)
    music, bank = arrays["text.train.features"]
    music2, bank2 = arrays["text.val.features"][0], arrays["text.test.features"][0]
    assert arrays["text.train.features"].shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(arrays["text.train.features"], axis=1), 1.0,
                               atol=1e-5)  # normalised
    assert cosine(music, music2) > 0.5 and cosine(bank, bank2) > 0.5
    assert cosine(music, bank2) < 0.2 and cosine(bank, music2) < 0.2
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_cache_embeds_only_new_items(tmp_path):
    first_rows = text_rows(SENTENCES[:3])
    first_rows[2] = first_rows[2].replace(",train", ",val")
    (tmp_path / "a").mkdir()
    report, first = extract(tmp_path / "a", first_rows + [
        't9,text,f,,"Prices of bonds fell sharply.",test'], cache=tmp_path / "cache")
    assert (report.embedded, report.cached) == (4, 0)
    (tmp_path / "b").mkdir()
    report, second = extract(tmp_path / "b", first_rows + [
        't9,text,f,,"Prices of bonds fell sharply.",test',
        't10,text,s,,"A violinist tunes her instrument.",train'], cache=tmp_path / "cache")
    assert (report.embedded, report.cached) == (1, 4)
    np.testing.assert_array_equal(second["text.train.features"][:2], first["text.train.features"])


def test_efficientnet_features_are_real(tmp_path, photos):
    rows = [f"china,image,photo,{photos}/china.jpg,,train",
            f"flower,image,photo,{photos}/flower.png,,val",
            f"crop,image,photo,{photos}/china_crop.jpg,,test"]
    rows += [f"d{i},digit,{i % 2},{photos}/digit{i}.png,,{split}"
             for i, split in enumerate(["train"] * 10 + ["val"] * 2 + ["test"] * 4)]
    report, arrays = extract(tmp_path, rows, extractors={"image": "efficientnet_lite0",
                                                         "digit": "efficientnet_lite0"})
    china, flower = arrays["image.train.features"][0], arrays["image.val.features"][0]
    crop = arrays["image.test.features"][0]
    assert china.shape == (1280,) and np.isfinite(china).all()
    assert cosine(china, crop) > cosine(china, flower) + 0.1  # the same scene, not the flower
    # digits (grey, 8x8 upscaled): each test digit is nearest to training digits of its class
    train, test = arrays["digit.train.features"], arrays["digit.test.features"]
    train_y, test_y = arrays["digit.train.labels"].argmax(1), arrays["digit.test.labels"].argmax(1)
    sims = (test / np.linalg.norm(test, axis=1, keepdims=True)) @ \
        (train / np.linalg.norm(train, axis=1, keepdims=True)).T
    assert (train_y[sims.argmax(1)] == test_y).mean() >= 0.75
    assert (report.embedded, report.cached) == (19, 0)


def test_skip_mode_with_real_extractors(tmp_path, photos):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    rows = [f"china,image,photo,{photos}/china.jpg,,train",
            f"flower,image,photo,{photos}/flower.png,,val",
            f"crop,image,photo,{photos}/china_crop.jpg,,test",
            "broken,image,photo,broken.jpg,,train",
            *text_rows(SENTENCES[:1]), 't5,text,s,,"",val', 't6,text,f,,"Rates rose.",val',
            't7,text,s,,"A song.",test']
    report, arrays = extract(tmp_path, rows, on_error="skip")
    assert sorted((s.id, s.reason.split(" (")[0]) for s in report.skipped) == [
        ("broken", "not a readable image"), ("t5", "empty text")]
    assert arrays["image.train.features"].shape == (1, 1280)
    assert arrays["text.val.features"].shape == (1, 384)
