"""The tuning pipeline: resolve -> probe -> [extract ->] prepare -> prior, the same tasks as the
training pipeline's (a tuning run reuses their outputs from the store), then `tune.workers`
parallel workers on GPU nodes running trials of one Optuna study in the cluster's database
(`tune.storage`), then `tune-result`, which writes best.yaml (the params profile `drcl profile
apply` takes) and trials.csv, and closes the study's MLflow run.

The workers and the result are never cached: the study is the state they read and change. A
worker started after the budget is spent only reads the result; a pod that dies leaves its trial
to its heartbeat and another worker runs it again (drcl.tune).
"""

from drcl.pipelines.drcl_pipeline import RUN_ID, fit_prior, on_cpu, on_gpu
from kfp import dsl
from kfp.dsl.graph_component import GraphComponent

from drcl import components
from drcl.config import Params
from drcl.kfp.project import pipeline_arguments, store_uri


def build_tune_pipeline(params: Params) -> GraphComponent:
    """The tuning pipeline with ``params`` as parameter defaults and its `kubeflow` group."""
    cluster = params.kubeflow
    steps = components.build(cluster.image)
    defaults = pipeline_arguments(params, tuning=True)
    store = store_uri(cluster)
    resources = cluster.resources
    workers = list(range(params.tune.workers))

    @dsl.pipeline(name=f"{cluster.pipeline}-tune", pipeline_root=cluster.pipeline_root,
                  description="DRCL: validation search of the train settings (Optuna), the "
                              "prior fixed; writes a params profile")
    def drcl_tune(seed: int = defaults["seed"], device: str = defaults["device"],
                  precision: str = defaults["precision"],
                  data: dict = defaults["data"], model: dict = defaults["model"],
                  prior: dict = defaults["prior"], train: dict = defaults["train"],
                  evaluate: dict = defaults["evaluate"], extract: dict = defaults["extract"],
                  tracking: dict = defaults["tracking"], registry: dict = defaults["registry"],
                  promotion: dict = defaults["promotion"], tune: dict = defaults["tune"]):
        head = fit_prior(steps, params, dict(
            seed=seed, device=device, precision=precision, data=data, model=model, prior=prior,
            train=train, evaluate=evaluate, extract=extract, tracking=tracking,
            registry=registry, promotion=promotion), tune=tune)
        # the exit handler closes the run's MLflow parent run (opened when the prior ran)
        finish = on_cpu(steps.finish(tracking=tracking, kfp_run=RUN_ID), cluster,
                         resources.task)
        finish.set_caching_options(False)
        with dsl.ExitHandler(finish, name="tracked-run"):
            with dsl.ParallelFor(workers, parallelism=min(cluster.parallelism, len(workers)),
                                 name="workers") as worker:
                searched = on_gpu(steps.tune(
                    task=head.gpu.outputs["tune"], dataset=head.prepared.outputs["dataset"],
                    class_prior=head.fitted.outputs["class_prior"], store=store,
                    tracking=tracking, worker=worker), cluster, resources.gpu_task)
                searched.set_caching_options(False)  # the study is its state
            result = on_cpu(steps.tune_result(
                task=head.gpu.outputs["tune"], results=dsl.Collected(searched.outputs["result"]),
                tracking=tracking), cluster, resources.task)
            result.set_caching_options(False)

    return drcl_tune
