"""Kubeflow Pipelines support: the glue between kfp artifacts and drcl's stages, compiling,
running locally, and talking to a Kubeflow Pipelines endpoint.

The components themselves live in the project's components/ folder and the wiring in
pipelines/; this package holds the library code they and `drcl pipeline` share.
"""
