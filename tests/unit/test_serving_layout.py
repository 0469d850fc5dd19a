"""Where drcl's files lie in a downloaded registry version: inside its MLflow Model, or at the
top of a folder registered before versions were MLflow Models."""

from __future__ import annotations

from drcl.serving.package import member_weights, payload, prior_file


def test_an_mlflow_model_keeps_drcls_files_under_artifacts(tmp_path):
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    assert payload(tmp_path) == tmp_path / "artifacts" / "drcl"
    assert member_weights(tmp_path, "text") == tmp_path / "artifacts/drcl/text/encoder.safetensors"
    assert prior_file(tmp_path) == tmp_path / "artifacts/drcl/prior.safetensors"


def test_an_earlier_plain_folder_holds_one_encoder_at_the_top(tmp_path):
    assert payload(tmp_path) == tmp_path
    assert member_weights(tmp_path, "text") == tmp_path / "encoder.safetensors"
    assert prior_file(tmp_path) == tmp_path / "prior.safetensors"
