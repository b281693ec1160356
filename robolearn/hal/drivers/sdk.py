"""Lazy vendor-SDK imports: robolearn and every driver module import without any vendor SDK installed; the SDK is
loaded only when a driver connects, and a missing one is reported with the command that installs it."""
from __future__ import annotations

import importlib
from types import ModuleType


def import_sdk(module: str, pip_name: str, driver: str, extra: str | None = "hardware") -> ModuleType:
    """Import `module` for `driver`; a missing module raises an ImportError that says what to install.

    `extra` is the robolearn extra that carries the package (None when the package is not in one, e.g. franky,
    whose wheel must match the robot's firmware). An SDK that is installed but fails to load (a missing system
    library, no display for pynput) keeps its own message, prefixed with the driver's name.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and e.name != module and not module.startswith(e.name + "."):
            raise ImportError(f"{driver}: importing {module!r} failed because its dependency {e.name!r} is missing "
                              f"({e}); reinstall {pip_name}") from e
        how = f"pip install 'robolearn[{extra}]' (or just pip install {pip_name})" if extra else f"pip install {pip_name}"
        raise ImportError(f"{driver} needs the vendor SDK module {module!r}, which is not installed: {how}") from e
    except ImportError as e:
        raise ImportError(f"{driver}: the vendor SDK {module!r} is installed but cannot load: {e}") from e
