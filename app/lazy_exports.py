"""Package re-exports resolved on first use (PEP 562).

`config` imports every section's config module, which imports its package's `__init__`;
eager re-exports there would make every process that reads configuration (the ingress, the
auction, the CLI) import torch and FAISS (~2-3 s per replica start). A package lists its exports
as name -> submodule and gets them lazily instead:

    __getattr__ = lazy_exports(__name__, {"AnnIndex": "index", ...})
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)  # resolved once
        return value

    return __getattr__
