"""The DRCL pipeline: resolve -> [extract ->] prepare -> prior (SPL, on a GPU node) -> train, one
GPU task per modality -> evaluate -> promote (champion or challenger, by drcl promote's gate).

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
"""Only the uncached tasks (resolve, finish) take the Kubeflow run's id: it tags the parent run."""


def build_pipeline(params: Params) -> GraphComponent:
    """The pipeline with ``params`` as parameter defaults and its `kubeflow` group applied."""
    cluster = params.kubeflow
    steps = components.build(cluster.image)
    defaults = pipeline_arguments(params)

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
        resolved = _in_cluster(steps.resolve(
            seed=seed, device=device, precision=precision, data=data, model=model, prior=prior,
            train=train, evaluate=evaluate, extract=extract, tracking=tracking, kfp_run=RUN_ID),
            cluster)
        resolved.set_caching_options(False)  # a branch moves: resolve it on every run
        key, pinned = resolved.outputs["key"], resolved.outputs["data"]
        finish = _in_cluster(steps.finish(tracking=tracking, kfp_run=RUN_ID), cluster)
        finish.set_caching_options(False)  # the exit handler must close this run's parent
        # the rest runs only when no completed run has computed this key; its tasks take the
        # key, never the run's id, so Kubeflow's cache can reuse them
        with dsl.ExitHandler(finish, name="tracked-run"), \
                dsl.If(resolved.outputs["changed"] == True, name="changed"):  # noqa: E712
            if params.data.source == "extracted":
                extracted = _in_cluster(steps.extract(
                    seed=seed, device=device, precision=precision, data=pinned, extract=extract),
                    cluster)
                prepared = _in_cluster(steps.prepare(
                    seed=seed, data=pinned, extracted=extracted.outputs["features"]),
                    cluster)
            else:
                prepared = _in_cluster(steps.prepare(seed=seed, data=pinned), cluster)
            dataset = prepared.outputs["dataset"]
            fitted = _on_gpu_node(steps.prior(
                dataset=dataset, seed=seed, device=device, precision=precision, model=model,
                prior=prior, train=train, tracking=tracking, run_key=key), cluster)
            class_prior = fitted.outputs["class_prior"]
            with dsl.ParallelFor(resolved.outputs["modalities"],
                                 parallelism=cluster.parallelism,
                                 name="modalities") as modality:
                trained = _on_gpu_node(steps.train(
                    class_prior=class_prior, modality=modality, seed=seed, device=device,
                    precision=precision, data=pinned, model=model, train=train,
                    tracking=tracking, run_key=key), cluster)
            evaluated = _in_cluster(steps.evaluate(
                dataset=dataset, encoders=dsl.Collected(trained.outputs["encoder"]),
                device=device, precision=precision, evaluate=evaluate, tracking=tracking,
                run_key=key), cluster)
            # the gate is drcl promote's own: a set that fails it is registered as a
            # challenger with its reasons
            promoted = _in_cluster(steps.promote(
                dataset=dataset, class_prior=class_prior,
                evaluation=evaluated.outputs["evaluation"], device=device, precision=precision,
                data=pinned, evaluate=evaluate, extract=extract, tracking=tracking,
                registry=registry, promotion=promotion, run_key=key), cluster)
            promoted.set_caching_options(False)  # it changes the registry: never skip it

    return drcl


def _in_cluster(task: PipelineTask, cluster: KubeflowParams, *, gpu: bool = False
                ) -> PipelineTask:
    """Requests and limits, plain env settings, and credentials from Kubernetes Secrets (names
    only in the YAML)."""
    wanted = cluster.resources.gpu_task if gpu else cluster.resources.task
    task.set_cpu_request(wanted.cpu).set_cpu_limit(wanted.cpu_limit)
    task.set_memory_request(wanted.memory).set_memory_limit(wanted.memory_limit)
    for name, value in cluster.env.items():
        task.set_env_variable(name, value)
    for secret in cluster.secrets:
        kubernetes.use_secret_as_env(task, secret_name=secret.name,
                                     secret_key_to_env={key: key for key in secret.keys})
    return task


def _on_gpu_node(task: PipelineTask, cluster: KubeflowParams) -> PipelineTask:
    """A task that trains (SPL's candidates, or one modality's encoder): its GPU, and the node
    selector and tolerations of the GPU nodes."""
    task.set_accelerator_type(cluster.gpu.accelerator).set_accelerator_limit(cluster.gpu.limit)
    for key, value in cluster.node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for t in cluster.tolerations:
        kubernetes.add_toleration(task, key=t.key, operator=t.operator, value=t.value,
                                  effect=t.effect)
    return _in_cluster(task, cluster, gpu=True)
