"""The pipeline's model steps, one module each, so that each DVC stage depends on its own code.

`drcl prior` / `drcl train` / `drcl evaluate`, the DVC stages of those names and the Kubeflow
components all call these functions the same way: validated Params, then the Layout that says
where the step reads and writes. drcl.steps declares them; the tests hold dvc.yaml, the CLI and
the components to that declaration.
"""
