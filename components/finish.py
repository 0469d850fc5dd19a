"""The pipeline's exit handler: closes the run's MLflow parent run, whatever happened."""

from kfp.dsl import PipelineTaskFinalStatus


def finish(tracking: dict, kfp_run: str, status: PipelineTaskFinalStatus):
    """Mark the Kubeflow run's MLflow parent run finished, failed or killed like the run."""
    import os

    from drcl.config import parse_params
    from drcl.kfp.tasks import RUN_ENV
    from drcl.kfp.tracking import end_pipeline_run

    end_pipeline_run(parse_params({"tracking": tracking}, source="pipeline arguments"),
                     os.environ.get(RUN_ENV) or kfp_run, status.state)
