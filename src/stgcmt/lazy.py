"""Package names loaded on first use (PEP 562), for the packages the CLI reaches into.

``stgcmt status`` and ``stgcmt send --help`` need a constant or a read-only query of
:mod:`stgcmt.scp` / :mod:`stgcmt.scu`, not the engine and pydicom behind the services, whose
import is most of such a run's time; a package's ``__init__`` names where each public name
lives, and the module behind it is imported when the name is first used."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from importlib import import_module


def lazy_attributes(
    package: str, where: Mapping[str, tuple[str, str]]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose public names are ``where``:
    name -> (module that defines it, its name there). A name, once loaded, is kept in the
    package, so the next use is an ordinary attribute."""
    namespace = vars(sys.modules[package])

    def __getattr__(name: str) -> object:
        try:
            module, attribute = where[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(import_module(module), attribute)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__
