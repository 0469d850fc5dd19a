"""Put on PYTHONPATH, this makes Python processes see a CPU with native bf16 (AVX-512 BF16):
another machine, to which `precision: auto` means bf16. Nothing is imported until drcl.runtime
is, so every other process (git, DVC) starts as usual."""

import importlib.abc
import importlib.util
import sys


class _Patch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "drcl.runtime":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        sys.meta_path.insert(0, self)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.bf16_is_fast = lambda device: device.type == "cpu"

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Patch())
