"""Where robolearn's folders are, decided here once so no module guesses from its own location.

From a source checkout (the folder with pyproject.toml beside the package) the project root is that folder:
`configs/`, `hardware/`, `datasets/`, `scripts/` and `runs/` are its sub-folders. `robolearn/configs` and
`robolearn/hardware` are links to the top-level folders, so a wheel ships them inside the package and the same
paths work installed. Without a checkout, data goes under the current directory. `$ROBOLEARN_DATA` moves the
datasets folder anywhere.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

DATA_ENV_VAR = "ROBOLEARN_DATA"
PACKAGE_DIR = Path(__file__).resolve().parent


@functools.cache
def checkout_root() -> Path | None:
    """The source checkout robolearn runs from, or None for an installed wheel."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() and (root / "configs").is_dir() else None


def project_root() -> Path:
    return checkout_root() or Path.cwd()


def configs_dir() -> Path:
    return PACKAGE_DIR / "configs"


def hardware_dir() -> Path:
    return PACKAGE_DIR / "hardware"


def scripts_dir() -> Path:
    return project_root() / "scripts"


def datasets_dir() -> Path:
    """Where imported and collected stores are written."""
    return Path(os.environ[DATA_ENV_VAR]) if os.environ.get(DATA_ENV_VAR) else project_root() / "datasets"


def dataset_search_dirs() -> list[Path]:
    """Where a task's dataset is looked for, in order: $ROBOLEARN_DATA, datasets/, and the shared data beside the
    project (../shared/data, where this project's machines keep the Push-T demonstrations)."""
    dirs = [Path(os.environ[DATA_ENV_VAR])] if os.environ.get(DATA_ENV_VAR) else []
    root = project_root()
    return [*dirs, root / "datasets", root.parent / "shared" / "data"]
