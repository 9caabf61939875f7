"""eo_common's tests: the helpers and fake data beside them, in ``tests/data/`` (torchgeo style).

Each module of ``tests/data`` is importable as ``eo_common_testdata_<name>`` (a name no other
package's tests use, so the packages' ``tests/data`` folders never collide):
``from eo_common_testdata_toy_training import TinyRegressor``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def load_test_data_module(name: str):
    """Import ``tests/data/<name>.py`` as ``eo_common_testdata_<name>`` (once)."""
    module_name = f"eo_common_testdata_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, DATA / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


for _path in sorted(DATA.glob("[a-z]*.py")):
    load_test_data_module(_path.stem)
