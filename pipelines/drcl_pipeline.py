"""The DRCL pipeline: resolve -> probe -> [extract ->] prepare -> prior (SPL, on a GPU node) ->
train, one GPU task per modality -> evaluate -> promote -> summary.

Only wiring and platform settings live here; every step is a component from components/. The
pipeline parameters are params.yaml's groups and default to its values; the cluster side (image,
GPU, node selector, tolerations, env, secrets) comes from its `kubeflow` group. Like dvc.yaml's
stages, the extract task exists only for data.source `extracted`.

Every task between resolve and summary takes its view of the params, its code's digest and the
content hashes of what it reads (drcl.kfp.plan, drcl.kfp.tasks), never the run's id: Kubeflow's
cache reuses a task whose inputs are unchanged, and a task whose upstream ran again but wrote
the same bytes. The tasks that read what Kubeflow cannot see (the data repository's moving
branch, raw files on a volume) always start, and reuse their outputs from the store by content.
"""

from dataclasses import dataclass
from typing import Any

from kfp import dsl, kubernetes
from kfp.dsl.graph_component import GraphComponent
from kfp.dsl.pipeline_task import PipelineTask

from drcl import components
from drcl.config import KubeflowParams, Params, TaskResources
from drcl.kfp.project import pipeline_arguments, store_uri
from drcl.kfp.tasks import RUN_ENV

RUN_ID = dsl.PIPELINE_JOB_ID_PLACEHOLDER
"""Only the uncached tasks that account for the run (summary, finish) take its id as an input;
the others read it from their pod's label."""


def build_pipeline(params: Params) -> GraphComponent:
    """The pipeline with ``params`` as parameter defaults and its `kubeflow` group applied."""
    cluster = params.kubeflow
    steps = components.build(cluster.image)
    defaults = pipeline_arguments(params)
    store = store_uri(cluster)
    resources = cluster.resources

    @dsl.pipeline(name=cluster.pipeline, pipeline_root=cluster.pipeline_root,
                  description="DRCL cross-modal retrieval: SPL prior, per-modality RSC training, "
                              "evaluation, promotion")
    def drcl(seed: int = defaults["seed"], device: str = defaults["device"],
             precision: str = defaults["precision"],
             data: dict = defaults["data"], model: dict = defaults["model"],
             prior: dict = defaults["prior"], train: dict = defaults["train"],
             evaluate: dict = defaults["evaluate"], extract: dict = defaults["extract"],
             tracking: dict = defaults["tracking"], registry: dict = defaults["registry"],
             promotion: dict = defaults["promotion"]):
        head = fit_prior(steps, params, dict(
            seed=seed, device=device, precision=precision, data=data, model=model, prior=prior,
            train=train, evaluate=evaluate, extract=extract, tracking=tracking,
            registry=registry, promotion=promotion))
        plan, prepared, fitted, extracted = head.plan, head.prepared, head.fitted, head.extracted
        dataset = prepared.outputs["dataset"]
        class_prior = fitted.outputs["class_prior"]
        # the exit handler closes the run's MLflow parent run whatever happens (the prior task
        # closes it itself when it fails). The fan-out reads only what the handler is handed:
        # kfp's local runner gives a loop the wrong value of a task output made beside it.
        finish = on_cpu(steps.finish(tracking=tracking, kfp_run=RUN_ID), cluster,
                         resources.task)
        finish.set_caching_options(False)
        with dsl.ExitHandler(finish, name="tracked-run"):
            with dsl.ParallelFor(prepared.outputs["fanout"], parallelism=cluster.parallelism,
                                 name="modalities") as item:
                trained = on_gpu(steps.train(item=item, class_prior=class_prior, store=store,
                                              tracking=tracking), cluster, resources.gpu_task)
            # one Collected per consumer: kfp 2.17 fails to compile one shared by two tasks
            evaluated = on_cpu(steps.evaluate(
                task=plan.outputs["evaluate"], dataset=dataset,
                encoders=dsl.Collected(trained.outputs["encoder"]), store=store,
                tracking=tracking), cluster, resources.evaluate)
            # the gate is drcl promote's own: a set that fails it is registered as a
            # challenger with its reasons
            promoted = on_cpu(steps.promote(
                task=plan.outputs["promote"], dataset=dataset, class_prior=class_prior,
                encoders=dsl.Collected(trained.outputs["encoder"]),
                source=plan.outputs["source"], store=store, tracking=tracking),
                cluster, resources.promote)
            promoted.set_caching_options(False)  # it changes the registry: never skip it
            promoted.after(evaluated)
            summary = on_cpu(steps.summary(
                kfp_run=RUN_ID, source=plan.outputs["source"],
                prepared=prepared.outputs["report"], prior=fitted.outputs["report"],
                trained=dsl.Collected(trained.outputs["report"]),
                evaluated=evaluated.outputs["report"], outcome=promoted.outputs["outcome"],
                tracking=tracking,
                **({"extracted": extracted.outputs["report"]} if extracted else {})),
                cluster, resources.task)
            summary.set_caching_options(False)

    return drcl


@dataclass(frozen=True)
class Head:
    """The tasks every pipeline starts with, up to the prior the training tasks read."""

    plan: PipelineTask
    gpu: PipelineTask
    prepared: PipelineTask
    fitted: PipelineTask
    extracted: PipelineTask | None


def fit_prior(steps: components.Steps, params: Params, arguments: dict[str, Any],
              tune: Any = None) -> Head:
    """resolve -> probe -> [extract ->] prepare -> prior, inside a pipeline function whose
    parameters are `arguments` (and `tune` for the tuning pipeline). The same tasks with the
    same keys in both pipelines: a tuning run reuses the data set and the prior of a training
    run from the store, and the reverse."""
    cluster = params.kubeflow
    store = store_uri(cluster)
    resources = cluster.resources
    extracts = params.data.source == "extracted"
    # data read from a path outside DVC and outside the store: Kubeflow cannot see a change
    outside = params.data.dvc is None and params.data.path is not None and not extracts
    plan = on_cpu(steps.resolve(**arguments, **({"tune": tune} if tune is not None else {})),
                   cluster, resources.task)
    plan.set_caching_options(False)  # a branch moves: resolve it on every run
    gpu = on_gpu(steps.probe(views=plan.outputs["gpu"]), cluster, resources.task)
    gpu.set_caching_options(False)  # what the GPU nodes make of `auto`, asked each run
    extracted = None
    if extracts:
        extracted = steps.extract(task=gpu.outputs["extract"], store=store)
        extracted.set_caching_options(False)  # raw files Kubeflow cannot see
        if params.extract.manifest is not None:
            on_gpu(extracted, cluster, resources.gpu_task)
        else:
            on_cpu(extracted, cluster, resources.task)
    prepared = on_cpu(steps.prepare(
        task=plan.outputs["prepare"], source=plan.outputs["source"], store=store,
        train_tasks=gpu.outputs["train"],
        **({"extracted": extracted.outputs["features"]} if extracted else {})),
        cluster, resources.task)
    if outside:
        prepared.set_caching_options(False)
    fitted = on_gpu(steps.prior(task=gpu.outputs["prior"], dataset=prepared.outputs["dataset"],
                                 store=store, tracking=arguments["tracking"]),
                     cluster, resources.gpu_task)
    return Head(plan, gpu, prepared, fitted, extracted)


def _common(task: PipelineTask, cluster: KubeflowParams, wanted: TaskResources
            ) -> PipelineTask:
    """Requests and limits, plain env settings, credentials from Kubernetes Secrets (names only
    in the YAML), and the run's id from the pod's label (never an input: it would defeat
    Kubeflow's cache)."""
    task.set_cpu_request(wanted.cpu).set_cpu_limit(wanted.cpu_limit)
    task.set_memory_request(wanted.memory).set_memory_limit(wanted.memory_limit)
    for name, value in cluster.env.items():
        task.set_env_variable(name, value)
    for secret in cluster.secrets:
        kubernetes.use_secret_as_env(task, secret_name=secret.name,
                                     secret_key_to_env={key: key for key in secret.keys})
    kubernetes.use_field_path_as_env(task, env_name=RUN_ENV,
                                     field_path="metadata.labels['pipeline/runid']")
    return task


def on_cpu(task: PipelineTask, cluster: KubeflowParams, wanted: TaskResources) -> PipelineTask:
    return _common(task, cluster, wanted)


def on_gpu(task: PipelineTask, cluster: KubeflowParams, wanted: TaskResources) -> PipelineTask:
    """A task on a GPU node: its GPU, and the node selector and tolerations of the GPU nodes."""
    task.set_accelerator_type(cluster.gpu.accelerator).set_accelerator_limit(cluster.gpu.limit)
    for key, value in cluster.node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for t in cluster.tolerations:
        kubernetes.add_toleration(task, key=t.key, operator=t.operator, value=t.value,
                                  effect=t.effect)
    return _common(task, cluster, wanted)
