"""Load the sample-repository builder from repos-fixture/build.py.

The folder name contains a dash, so it cannot be imported as a package.
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib
import sys
from types import ModuleType

BUILDER_PATH = pathlib.Path(__file__).resolve().parent.parent / "repos-fixture" / "build.py"
MODULE_NAME = "repos_fixture_build"


@functools.cache
def load_builder() -> ModuleType:
    """Import repos-fixture/build.py once and return the module.

    Use `load_builder().build_sample(path)` to create the sample bare repository.
    """
    spec = importlib.util.spec_from_file_location(MODULE_NAME, BUILDER_PATH)
    if spec is None or spec.loader is None:
        raise ImportError(f"failed to load the fixture builder from {BUILDER_PATH}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module
