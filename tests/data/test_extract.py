"""The extract step without models: manifests, bad items (fail and skip), split assignment,
precomputed features, the report, and the `extracted` source that hands the result to prepare.
Every bad input stops with one line naming the file and row, and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from drcl.config import DataParams, ExtractParams, Params
from drcl.data.dataset import SPLITS, load_modality
from drcl.data.prepare import prepare_dataset
from drcl.errors import DrclError
from drcl.extract import FEATURES_FILE, REPORT_FILE
from drcl.extract.manifest import Item, read_manifest
from drcl.extract.step import choose_extractors, extract_dataset

ROOT = Path(__file__).resolve().parents[2]
REAL_WIKIPEDIA = ROOT.parent / "shared" / "data" / "wikipedia"
CLASSES = ["cat", "dog", "fish"]


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def write_vectors(folder: Path, n: int, *, dim: int = 4, seed: int = 0) -> list[str]:
    """n one-vector .npy files whose values carry their class (i % 3); returns CSV rows."""
    rng = np.random.default_rng(seed)
    folder.mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        np.save(folder / f"v{i}.npy", rng.normal(size=dim) + 3 * (i % 3))
        rows.append(f"v{i},vec,{CLASSES[i % 3]},{folder.name}/v{i}.npy")
    return rows


def run(tmp_path: Path, manifest: Path, **params) -> tuple:
    extract = ExtractParams(manifest=manifest, extractors=params.pop("extractors", {
        "vec": "precomputed", "text": "minilm", "image": "efficientnet_lite0"}), **params)
    out = tmp_path / "extracted"
    report = extract_dataset(Params(seed=0, device="cpu", extract=extract), out_dir=out,
                             cache_dir=tmp_path / "cache")
    return report, out


def test_csv_and_jsonl_manifests_give_the_same_items(tmp_path):
    write_csv(tmp_path / "m.csv", "id,modality,labels,path,text,split", [
        "a,image,cat|dog,pics/a.png,,train",
        'b,text,fish,,"A fish, swimming.",',
    ])
    (tmp_path / "m.jsonl").write_text(
        '{"id": "a", "modality": "image", "labels": ["cat", "dog"], "path": "pics/a.png", '
        '"split": "train"}\n\n{"id": "b", "modality": "text", "label": "fish", '
        '"text": "A fish, swimming."}\n')
    csv_items = read_manifest(tmp_path / "m.csv").items
    jsonl_items = read_manifest(tmp_path / "m.jsonl").items
    strip = [(i.id, i.modality, i.labels, i.path, i.text, i.split) for i in csv_items]
    assert strip == [(i.id, i.modality, i.labels, i.path, i.text, i.split) for i in jsonl_items]
    assert csv_items[0].path == tmp_path / "pics/a.png" and csv_items[0].labels == ("cat", "dog")
    assert csv_items[1].split is None and csv_items[1].where == f"{tmp_path / 'm.csv'}:3"
    other_root = read_manifest(tmp_path / "m.csv", root=tmp_path / "data").items[0]
    assert other_root.path == tmp_path / "data/pics/a.png"


@pytest.mark.parametrize(("header", "row", "message"), [
    ("id,modality,path", "a,image,x.png", "m.csv: header: missing label or labels"),
    ("id,modality,label,paht", "a,image,cat,x.png", "unexpected 'paht'"),
    ("id,modality,label,path,split", "a,image,cat,x.png,training",
     "m.csv:2: split 'training' is not one of train, val, test"),
    ("id,modality,label,path,text", "a,image,cat,x.png,hello", "m.csv:2: give a path or a text"),
    ("id,modality,label,path", "a,image,cat,", "m.csv:2: give a path (a file) or a text"),
    ("id,modality,label,path,row", "a,image,cat,x.npy,-1", "m.csv:2: row must be a whole"),
    ("id,modality,label,path", "a,im.age,cat,x.png", "modality 'im.age' must use only"),
    ("id,modality,label,path", "a,image,cat,x.png,extra", "m.csv:2: more cells than the header"),
])
def test_manifest_errors_are_one_line(tmp_path, header, row, message):
    write_csv(tmp_path / "m.csv", header, [row])
    with pytest.raises(DrclError) as err:
        read_manifest(tmp_path / "m.csv")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_duplicate_ids_and_empty_manifests(tmp_path):
    write_csv(tmp_path / "m.csv", "id,modality,label,path", ["a,image,cat,1.png",
                                                             "b,image,cat,2.png",
                                                             "a,image,dog,3.png",
                                                             "a,text,dog,3.txt"])
    with pytest.raises(DrclError, match=r"duplicate item ids in a modality: .*m.csv:2 "
                                        r"\(image 'a'\), .*m.csv:4 \(image 'a'\)$"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(DrclError, match="e.jsonl: the manifest lists no items"):
        read_manifest(tmp_path / "e.jsonl")
    (tmp_path / "j.jsonl").write_text('{"id": "a", "modality": "text", "label": "x", "text": }\n')
    with pytest.raises(DrclError, match=r"j.jsonl:1: not a JSON object"):
        read_manifest(tmp_path / "j.jsonl")
    with pytest.raises(DrclError, match="cannot tell the manifest format"):
        read_manifest(tmp_path / "m.txt")
    with pytest.raises(DrclError, match="absent.csv: manifest not found"):
        read_manifest(tmp_path / "absent.csv")


def bad_manifest(tmp_path: Path) -> Path:
    """Five bad items among good ones: every kind of item-level problem."""
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (tmp_path / "empty.txt").write_text("  \n")
    rows = write_vectors(tmp_path / "vecs", 9)
    rows += ["t1,text,cat,,A cat sleeps.",
             "t2,text,cat,empty.txt,",
             "t3,text,bird,,A bird sings.",
             "i1,image,dog,pics/broken.png,",
             "i2,image,dog,pics/absent.png,",
             "v9,vec,cat,vecs/absent.npy,"]
    return write_csv(tmp_path / "m.csv", "id,modality,label,path,text", rows)


def test_bad_items_fail_the_run_listing_rows_and_write_nothing(tmp_path):
    manifest = bad_manifest(tmp_path)
    out = tmp_path / "extracted"
    out.mkdir()
    (out / "old.txt").write_text("previous output")
    with pytest.raises(DrclError) as err:
        run(tmp_path, manifest, classes=CLASSES)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("5 bad item(s): ")
    assert f"{manifest}:12 (text 't2'): empty text" in message
    assert f"{manifest}:13 (text 't3'): label 'bird' is not in the class list" in message
    assert f"{manifest}:14 (image 'i1'): not a readable image" in message
    assert "pics/absent.png" in message
    assert "and 1 more" in message  # four rows shown, the rest counted
    assert "extract.on_error: skip" in message
    assert [p.name for p in out.iterdir()] == ["old.txt"]  # untouched
    assert not list((tmp_path / "cache").glob("**/*.npy"))  # nothing was embedded


def test_skip_leaves_bad_items_out_and_reports_them(tmp_path):
    rows = write_vectors(tmp_path / "vecs", 12)
    rows += ["x1,vec,cat,vecs/absent.npy", "x2,vec,horse,vecs/v0.npy"]
    manifest = write_csv(tmp_path / "m.csv", "id,modality,label,path", rows)
    report, out = run(tmp_path, manifest, classes=CLASSES, on_error="skip")
    assert [s.id for s in report.skipped] == ["x1", "x2"]
    info = json.loads((out / REPORT_FILE).read_text())
    assert info["skipped"][0]["where"] == f"{manifest}:14"
    assert "file not found" in info["skipped"][0]["reason"]
    assert info["sizes"] == {"vec": {"train": 6, "val": 3, "test": 3}}
    assert info["classes"] == CLASSES and info["extractors"] == {"vec": "precomputed"}


def test_skip_still_fails_when_a_modality_has_no_good_item(tmp_path):
    rows = write_vectors(tmp_path / "vecs", 9) + ["t1,text,cat,absent.txt", "t2,text,dog,no.txt"]
    manifest = write_csv(tmp_path / "m.csv", "id,modality,label,path", rows)
    with pytest.raises(DrclError, match=r"modality 'text': all 2 items are bad, nothing is left "
                                        r"\(first .*m.csv:11: file not found: .*absent.txt\)"):
        run(tmp_path, manifest, on_error="skip")


def test_a_modality_whose_items_suit_no_extractor_lists_its_rows(tmp_path):
    rows = write_vectors(tmp_path / "vecs", 3) + [f"s{i},sound,cat,s{i}.wav" for i in range(6)]
    manifest = write_csv(tmp_path / "m.csv", "id,modality,label,path", rows)
    with pytest.raises(DrclError) as err:
        run(tmp_path, manifest, extractors={})
    message = str(err.value)
    assert message.startswith("modality 'sound': cannot tell which extractor suits ")
    assert f"{manifest}:5 (id 's0')" in message and "and 2 more" in message
    assert message.endswith("name one in extract.extractors.sound")


def test_extractors_follow_the_items_unless_named():
    def item(modality: str, **fields) -> Item:
        return Item(where="m.csv:2", id=f"{modality}{len(fields)}", modality=modality,
                    labels=("cat",), **fields)

    items = [item("caption", text="A cat."), item("doc", path=Path("a.TXT")),
             item("photo", path=Path("p.JPG")), item("vec", path=Path("v.npy")),
             item("mat", path=Path("f.mat"), key="X", row=3)]
    assert choose_extractors({}, items) == {
        "caption": "minilm", "doc": "minilm", "photo": "efficientnet_lite0",
        "vec": "precomputed", "mat": "precomputed"}
    assert choose_extractors({"photo": "precomputed"}, items)["photo"] == "precomputed"
    mixed = [item("x", text="words"), item("x", path=Path("p.png"))]
    with pytest.raises(DrclError, match=r"modality 'x': its items call for different extractors "
                                        r"\(minilm for .*; efficientnet_lite0 for .*\); name one "
                                        r"in extract.extractors.x"):
        choose_extractors({}, mixed)


def test_unassigned_rows_are_split_stratified_by_seed(tmp_path):
    rows = write_vectors(tmp_path / "vecs", 30)
    rows[0] += ",test"  # a given split is kept
    rows[1:] = [r + "," for r in rows[1:]]
    manifest = write_csv(tmp_path / "m.csv", "id,modality,label,path,split", rows)
    report, out = run(tmp_path, manifest)
    assert report.sizes == {"vec": {"train": 17, "val": 6, "test": 7}}
    with np.load(out / FEATURES_FILE) as npz:
        for split in ("train", "val", "test"):
            assert npz[f"vec.{split}.labels"].sum(0).min() >= 2  # every class in every split
        first = npz["vec.test.features"].copy()
        np.testing.assert_allclose(first[0], np.load(tmp_path / "vecs/v0.npy"), rtol=1e-6)
    (tmp_path / "again").mkdir()
    _, out2 = run(tmp_path / "again", manifest)
    with np.load(out2 / FEATURES_FILE) as npz:
        np.testing.assert_array_equal(npz["vec.test.features"], first)


def paired_manifest(tmp_path: Path, n: int = 30, *, splits: dict[int, str] | None = None) -> Path:
    """n items, each a vector in modality `vec` and a shorter one in `aux`, under one id."""
    rows = []
    rng = np.random.default_rng(1)
    (tmp_path / "aux").mkdir()
    for i, row in enumerate(write_vectors(tmp_path / "vecs", n)):
        np.save(tmp_path / "aux" / f"a{i}.npy", rng.normal(size=2) + i % 3)
        split = (splits or {}).get(i, "")
        rows += [f"{row},{split}", f"v{i},aux,{CLASSES[i % 3]},aux/a{i}.npy,{split}"]
    rows.append("lone,aux,cat,aux/a0.npy,")  # an item seen in one modality only
    return write_csv(tmp_path / "m.csv", "id,modality,label,path,split", rows)


def test_one_item_in_several_modalities_lands_in_one_split(tmp_path):
    report, out = run(tmp_path, paired_manifest(tmp_path), extractors={})
    with np.load(out / FEATURES_FILE) as npz:
        where = {m: {str(i): s for s in SPLITS for i in npz[f"{m}.{s}.ids"]}
                 for m in ("vec", "aux")}
    assert where["aux"].pop("lone") in SPLITS
    assert where["vec"] == where["aux"]  # every shared id in the same split in both
    assert report.sizes["vec"] == {"train": 18, "val": 6, "test": 6}
    prepared = prepare_dataset(Params(seed=0,
                                      data=DataParams(source="extracted", path=out)),
                               out_dir=tmp_path / "prepared")
    assert prepared.paired
    assert prepared.modalities["vec"].extractor == "precomputed"
    assert set(load_modality(tmp_path / "prepared", "vec").test.ids) == \
        {i for i, s in where["vec"].items() if s == "test"}


def test_a_given_split_carries_over_to_the_same_item_elsewhere(tmp_path):
    manifest = paired_manifest(tmp_path)
    lines = manifest.read_text().splitlines()
    lines[2] = lines[2].removesuffix(",") + ",test"  # v0 in aux only: vec's v0 follows it
    manifest.write_text("\n".join(lines) + "\n")
    _, out = run(tmp_path, manifest, extractors={})
    with np.load(out / FEATURES_FILE) as npz:
        assert "v0" in npz["vec.test.ids"] and "v0" in npz["aux.test.ids"]


def test_one_item_with_two_splits_is_refused(tmp_path):
    manifest = paired_manifest(tmp_path, splits={3: "train"})
    lines = manifest.read_text().splitlines()
    lines[8] = lines[8].removesuffix("train") + "test"  # aux's v3: test, vec's v3: train
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(DrclError, match=r"^id 'v3' names one item in several modalities but has "
                                        r"different splits \(.*m.csv:8 \(vec: train\), "
                                        r".*m.csv:9 \(aux: test\)\); give its rows one split$"):
        run(tmp_path, manifest, extractors={})
    assert not (tmp_path / "extracted").exists()


def test_too_few_items_for_a_split(tmp_path):
    manifest = write_csv(tmp_path / "m.csv", "id,modality,label,path,split",
                         [r + ",train" for r in write_vectors(tmp_path / "vecs", 4)])
    with pytest.raises(DrclError, match="modality 'vec': no item in the val split"):
        run(tmp_path, manifest)


def test_precomputed_rows_of_a_matrix(tmp_path):
    matrix = np.arange(24, dtype=np.float64).reshape(6, 4)
    np.savez(tmp_path / "feats.npz", table=matrix)
    rows = [f"r{i},vec,{CLASSES[i % 3]},feats.npz,table,{i},{s}"
            for i, s in enumerate(["train", "train", "train", "val", "test", "test"])]
    rows.append("r9,vec,cat,feats.npz,table,9,train")
    rows.append("r10,vec,cat,feats.npz,other,0,train")
    manifest = write_csv(tmp_path / "m.csv", "id,modality,label,path,key,row,split", rows)
    with pytest.raises(DrclError) as err:
        run(tmp_path, manifest)
    assert "row 9 is out of range for an array of shape (6, 4)" in str(err.value)
    assert "no key 'other'; found ['table']" in str(err.value)
    report, out = run(tmp_path, manifest, on_error="skip")
    with np.load(out / FEATURES_FILE) as npz:
        np.testing.assert_array_equal(npz["vec.test.features"], matrix[4:])
        assert list(npz["classes"]) == CLASSES


def test_null_manifest_writes_only_the_report(tmp_path):
    report = extract_dataset(Params(), out_dir=tmp_path / "extracted")
    assert report.name is None
    assert [p.name for p in (tmp_path / "extracted").iterdir()] == [REPORT_FILE]
    with pytest.raises(DrclError, match="ran with extract.manifest null"):
        prepare_dataset(Params(seed=0,
                               data=DataParams(source="extracted", path=tmp_path / "extracted")),
                        out_dir=tmp_path / "prepared")


def test_extracted_source_feeds_prepare(tmp_path):
    rows = write_vectors(tmp_path / "vecs", 15)
    manifest = write_csv(tmp_path / "pets.csv", "id,modality,label,path", rows)
    run(tmp_path, manifest)
    out = tmp_path / "prepared"
    source = DataParams(source="extracted", path=tmp_path / "extracted")
    prepared = prepare_dataset(Params(seed=0, data=source), out_dir=out)
    assert prepared.name == "pets" and prepared.classes == CLASSES
    assert prepared.modalities["vec"].sizes == {"train": 9, "val": 3, "test": 3}
    assert not prepared.multi_label
    assert load_modality(out, "vec").train.features.shape == (9, 4)
    with pytest.raises(DrclError, match="no extraction here"):
        prepare_dataset(Params(seed=0,
                               data=DataParams(source="extracted", path=tmp_path / "nothing")),
                        out_dir=out)


@pytest.mark.skipif(not REAL_WIKIPEDIA.is_dir(),
                    reason=f"the real Wikipedia release is not at {REAL_WIKIPEDIA} "
                           "(../shared/data/wikipedia beside the repository)")
def test_wikipedia_release_as_a_manifest():
    from drcl.extract.extractors import MiniLM, Precomputed

    manifest = read_manifest(REAL_WIKIPEDIA, manifest_format="wikipedia_svcl")
    assert len(manifest.items) == 2 * 2866 and manifest.classes[-1] == "warfare"
    texts = [i for i in manifest.items if i.modality == "text"]
    assert [sum(i.split == s for i in texts) for s in ("train", "val", "test")] == [2173, 231, 462]
    _, body = MiniLM(batch_size=8, device="cpu").load(texts[0])
    assert len(body.split()) > 100 and "<text>" not in body
    image = next(i for i in manifest.items if i.modality == "image" and i.split == "val")
    _, vector = Precomputed().load(image)
    assert vector.shape == (128,)
    # one id per pair: the image is named by the article section it illustrates
    assert [i.id for i in manifest.items if i.modality == "image"] == [i.id for i in texts]


def test_the_items_digest_keys_extraction_by_what_it_reads(tmp_path):
    """A Kubeflow extract task is keyed by this digest: the manifest's rows and the bytes of
    every file they name, which lie outside any store."""
    from drcl.extract.step import items_digest

    manifest = write_csv(tmp_path / "m.csv", "id,modality,labels,path",
                         write_vectors(tmp_path / "vecs", 6))
    settings = ExtractParams(manifest=manifest)
    first = items_digest(settings)
    assert items_digest(settings) == first
    assert items_digest(ExtractParams()) != first  # no manifest: nothing to read
    np.save(tmp_path / "vecs" / "v3.npy", np.zeros(4))  # one file's content changes
    changed = items_digest(settings)
    assert changed != first
    text = manifest.read_text().replace("v1,vec,dog", "v1,vec,fish")  # one row's label
    manifest.write_text(text)
    assert items_digest(settings) not in (first, changed)
