"""The champions as an MLflow Model: every registered set and encoder version is one.

A version's artifacts are an MLflow Model folder (`MLmodel`, a pyfunc flavor implemented here,
a signature from `drcl.serving.schema`, an input example) around drcl's own files, so that
`mlflow.pyfunc.load_model("models:/drcl-set@champion")`, `mlflow models serve` and serving
runtimes built on them use the champions with no drcl-specific code of their own.
"""
