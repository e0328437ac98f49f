"""Package attributes loaded on first use (PEP 562).

A package's `__init__` says which module defines each public name; importing the package then
costs nothing, so a command line can check its flags before TensorFlow loads:

    __getattr__, __dir__ = lazy_attributes(__name__, {"HGN": "hgn.model", ...})
"""
from __future__ import annotations

import importlib
import sys
from typing import Callable, Iterable, Mapping, Tuple


def lazy_attributes(package: str, names: Mapping[str, str],
                    submodules: Iterable[str] = ()) -> Tuple[Callable, Callable]:
    """`(__getattr__, __dir__)` for the module `package`.

    Args:
      package: the package's `__name__` (it must be importing, i.e. in `sys.modules`).
      names: public name -> the module that defines it; a loaded name is cached in the package.
      submodules: names returned as the submodule `package.name` itself.
    """
    namespace = vars(sys.modules[package])
    submodules = frozenset(submodules)

    def __getattr__(name: str):
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace.get("__all__", ())) | {n for n in namespace if not n.startswith("_")})

    return __getattr__, __dir__
