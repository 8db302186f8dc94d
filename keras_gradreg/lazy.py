"""Public names loaded when first used (PEP 562), so that importing a package imports
only what its users touch: CleverHans, the evaluations and the data pipelines wait until
they are asked for (and, on JAX, TensorFlow with them)."""

import importlib
from typing import Callable, Mapping


def loader(package: str, exports: Mapping[str, str], submodules: tuple,
           renamed: Callable = None, public: tuple = ()) -> tuple:
    """(`__getattr__`, `__dir__`) for a package's module: each name of `exports` comes
    from its module (relative to the package), each of `submodules` is imported, when
    first asked for, and kept in the package's namespace.

    Args:
      package: the package's name.
      exports: public name -> the module defining it, e.g. {"GradRegModel": "models"}.
      submodules: the modules it exposes, e.g. ("attacks", "evaluation").
      renamed: name -> its new dotted path (after a DeprecationWarning), or None for a
        name never renamed.
      public: the package's other public names (imported with it), which `dir` lists too,
        so that `dir(package)` is its `__all__`.
    """

    def load(name: str):
        """A public name or submodule, imported now and kept in the package's namespace."""
        if name in submodules:
            value = importlib.import_module(f"{package}.{name}")
        else:
            value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        setattr(importlib.import_module(package), name, value)
        return value

    def resolve(path: str):
        """A public name, a module below the package, or an attribute of one."""
        if path in exports or path in submodules:
            return load(path)
        try:
            return importlib.import_module(f"{package}.{path}")
        except ModuleNotFoundError:
            module, _, attribute = path.rpartition(".")
            return getattr(importlib.import_module(f"{package}.{module}"), attribute)

    def __getattr__(name: str):
        if name in exports or name in submodules:
            return load(name)
        new = renamed(name) if renamed else None
        if new is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return resolve(new)  # not kept: each use of an old name warns

    def __dir__() -> list:
        return sorted(set(exports) | set(submodules) | set(public))

    return __getattr__, __dir__
