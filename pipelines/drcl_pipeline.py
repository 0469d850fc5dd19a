"""The DRCL pipeline: [extract ->] prepare -> prior (SPL) -> train, one GPU task per modality ->
evaluate -> promote, when the set clears the promotion gate.

Only wiring and platform settings live here; every step is a component from components/. The
pipeline parameters are params.yaml's groups and default to its values; the cluster side (image,
GPU, node selector, tolerations, env, secrets) comes from its `kubeflow` group. Like dvc.yaml's
stages, the extract task exists only for data.source `extracted`.
"""

from kfp import dsl, kubernetes
from kfp.dsl.graph_component import GraphComponent
from kfp.dsl.pipeline_task import PipelineTask

from drcl import components
from drcl.config import KubeflowParams, Params
from drcl.kfp.project import pipeline_arguments

RUN_ID = dsl.PIPELINE_JOB_ID_PLACEHOLDER
"""Every tracked task gets the Kubeflow run's id: they share one MLflow parent run by it."""


def build_pipeline(params: Params) -> GraphComponent:
    """The pipeline with ``params`` as parameter defaults and its `kubeflow` group applied."""
    cluster = params.kubeflow
    steps = components.build(cluster.image)
    defaults = pipeline_arguments(params)

    @dsl.pipeline(name=cluster.pipeline, pipeline_root=cluster.pipeline_root,
                  description="DRCL cross-modal retrieval: SPL prior, per-modality RSC training, "
                              "evaluation, promotion")
    def drcl(seed: int = defaults["seed"], device: str = defaults["device"],
             data: dict = defaults["data"], model: dict = defaults["model"],
             prior: dict = defaults["prior"], train: dict = defaults["train"],
             evaluate: dict = defaults["evaluate"], extract: dict = defaults["extract"],
             tracking: dict = defaults["tracking"], registry: dict = defaults["registry"],
             promotion: dict = defaults["promotion"]):
        finish = _in_cluster(steps.finish(tracking=tracking, kfp_run=RUN_ID), cluster)
        finish.set_caching_options(False)  # the exit handler must close this run's parent
        with dsl.ExitHandler(finish, name="tracked-run"):
            if params.data.source == "extracted":
                extracted = _in_cluster(steps.extract(seed=seed, device=device, data=data,
                                                      extract=extract), cluster)
                prepared = _in_cluster(steps.prepare(
                    seed=seed, data=data, extracted=extracted.outputs["features"]), cluster)
            else:
                prepared = _in_cluster(steps.prepare(seed=seed, data=data), cluster)
            dataset = prepared.outputs["dataset"]
            fitted = _in_cluster(steps.prior(
                dataset=dataset, seed=seed, device=device, model=model, prior=prior,
                train=train, tracking=tracking, kfp_run=RUN_ID), cluster)
            class_prior = fitted.outputs["class_prior"]
            with dsl.ParallelFor(prepared.outputs["Output"], parallelism=cluster.parallelism,
                                 name="modalities") as modality:
                trained = _on_gpu_node(steps.train(
                    dataset=dataset, class_prior=class_prior, modality=modality, seed=seed,
                    device=device, data=data, model=model, train=train, tracking=tracking,
                    kfp_run=RUN_ID), cluster)
            evaluated = _in_cluster(steps.evaluate(
                dataset=dataset, encoders=dsl.Collected(trained.outputs["encoder"]),
                device=device, evaluate=evaluate, tracking=tracking, kfp_run=RUN_ID), cluster)
            # the gate is drcl promote's own: a set that fails it is registered as a challenger
            promoted = _in_cluster(steps.promote(
                dataset=dataset, class_prior=class_prior,
                evaluation=evaluated.outputs["evaluation"], device=device, data=data,
                evaluate=evaluate, extract=extract, tracking=tracking, registry=registry,
                promotion=promotion, kfp_run=RUN_ID), cluster)
            promoted.set_caching_options(False)  # it changes the registry: never skip it

    return drcl


def _in_cluster(task: PipelineTask, cluster: KubeflowParams) -> PipelineTask:
    """Plain env settings, and credentials from Kubernetes Secrets (names only in the YAML)."""
    for name, value in cluster.env.items():
        task.set_env_variable(name, value)
    for secret in cluster.secrets:
        kubernetes.use_secret_as_env(task, secret_name=secret.name,
                                     secret_key_to_env={key: key for key in secret.keys})
    return task


def _on_gpu_node(task: PipelineTask, cluster: KubeflowParams) -> PipelineTask:
    """A training task: its GPU, and the node selector and tolerations of the GPU nodes."""
    task.set_accelerator_type(cluster.gpu.accelerator).set_accelerator_limit(cluster.gpu.limit)
    for key, value in cluster.node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for t in cluster.tolerations:
        kubernetes.add_toleration(task, key=t.key, operator=t.operator, value=t.value,
                                  effect=t.effect)
    return _in_cluster(task, cluster)
