"""Kubeflow components, one per DRCL step, plus the run's own bookkeeping.

Each step's component is a thin shell around drcl.kfp.task_steps, which keys the task and calls
the library function that the matching `drcl` command and DVC stage call; the names follow
dvc.yaml's stages. `resolve` and `probe` plan the run, `summary` and `finish` account for it.
The functions are plain Python here and become components in `build`, so the one image setting
(params.yaml `kubeflow.image`) reaches them all. Platform settings (GPU, node selector,
tolerations, secrets) are applied in pipelines/. `tune` and `tune_result` make the tuning
pipeline (pipelines/tune_pipeline.py) with the first four.
"""

from dataclasses import dataclass

from drcl.components.evaluate import evaluate
from drcl.components.extract import extract
from drcl.components.finish import finish
from drcl.components.prepare import prepare
from drcl.components.prior import prior
from drcl.components.probe import probe
from drcl.components.promote import promote
from drcl.components.resolve import resolve
from drcl.components.summary import summary
from drcl.components.train import train
from drcl.components.tune import tune
from drcl.components.tune_result import tune_result
from kfp import dsl
from kfp.dsl.python_component import PythonComponent


@dataclass(frozen=True)
class Steps:
    """The DRCL steps as kfp components, all running in one image."""

    resolve: PythonComponent
    probe: PythonComponent
    extract: PythonComponent
    prepare: PythonComponent
    prior: PythonComponent
    train: PythonComponent
    evaluate: PythonComponent
    promote: PythonComponent
    summary: PythonComponent
    finish: PythonComponent
    tune: PythonComponent
    tune_result: PythonComponent


def build(image: str) -> Steps:
    """Every step as a component in ``image``, which already holds drcl and kfp (no installs)."""

    def component(func) -> PythonComponent:
        return dsl.component(func, base_image=image, install_kfp_package=False)

    return Steps(resolve=component(resolve), probe=component(probe),
                 extract=component(extract), prepare=component(prepare),
                 prior=component(prior), train=component(train), evaluate=component(evaluate),
                 promote=component(promote), summary=component(summary),
                 finish=component(finish), tune=component(tune),
                 tune_result=component(tune_result))
