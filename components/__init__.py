"""Kubeflow components, one per DRCL step.

Each component is a thin shell around the library function that the matching `drcl` command and
DVC stage call; the names follow dvc.yaml's stages. The functions are plain Python here and become
components in `build`, so the one image setting (params.yaml `kubeflow.image`) reaches them all.
Platform settings (GPU, node selector, tolerations, secrets) are applied in pipelines/.
"""

from dataclasses import dataclass

from drcl.components.evaluate import evaluate
from drcl.components.extract import extract
from drcl.components.finish import finish
from drcl.components.prepare import prepare
from drcl.components.prior import prior
from drcl.components.promote import promote
from drcl.components.resolve import resolve
from drcl.components.train import train
from kfp import dsl
from kfp.dsl.python_component import PythonComponent


@dataclass(frozen=True)
class Steps:
    """The DRCL steps as kfp components, all running in one image."""

    resolve: PythonComponent
    extract: PythonComponent
    prepare: PythonComponent
    prior: PythonComponent
    train: PythonComponent
    evaluate: PythonComponent
    promote: PythonComponent
    finish: PythonComponent


def build(image: str) -> Steps:
    """Every step as a component in ``image``, which already holds drcl and kfp (no installs)."""

    def component(func) -> PythonComponent:
        return dsl.component(func, base_image=image, install_kfp_package=False)

    return Steps(resolve=component(resolve), extract=component(extract),
                 prepare=component(prepare),
                 prior=component(prior), train=component(train), evaluate=component(evaluate),
                 promote=component(promote), finish=component(finish))
