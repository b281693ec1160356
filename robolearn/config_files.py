"""Config files and command-line overrides: hydra composition of configs/, tasks by name (configs/task/NAME.yaml),
configs/GROUP/NAME.yaml for the evaluation models, and typed FIELD=VALUE overrides checked against the config
dataclasses by robolearn.typed_config (the one type checker)."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robolearn.paths import configs_dir
from robolearn.typed_config import ConfigError, check_value


def compose(config_name: str, overrides: Sequence[str]) -> dict[str, Any]:
    """Compose a hydra config from the project's configs/ folder into a plain dict; a bad override or an unknown
    config group raises a ConfigError that names it (hydra's own exceptions are not ValueErrors)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    config_dir = configs_dir()
    if not (config_dir / f"{config_name}.yaml").exists():
        raise FileNotFoundError(f"no config {config_name}.yaml in {config_dir}")
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except (HydraException, OmegaConfBaseException) as err:
        detail = " ".join(str(err).split())
        raise ConfigError(f"cannot compose {config_dir / config_name}.yaml with overrides "
                          f"{' '.join(overrides) or '(none)'}: {detail}") from err


def _yaml_file(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from err


def _named_file(folder: Path, name: str, what: str, label: str) -> Path:
    path = folder / f"{name}.yaml"
    if "/" in name or "\\" in name or not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        raise FileNotFoundError(f"{what} {name!r} in {folder} ({label}: {known})")
    return path


def task_by_name(name: str) -> Any:
    """configs/task/NAME.yaml as a TaskConfig, every field checked: the one way the verbs load a task by name."""
    from robolearn.task import task_from_dict

    try:
        path = _named_file(configs_dir() / "task", name, "no task config", "tasks")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"cannot load task {name!r}: {err}") from None
    return task_from_dict(_yaml_file(path), str(path))


def model_config(group: str, name: str, config_class: type, overrides: Sequence[str], flag: str) -> dict[str, Any]:
    """configs/GROUP/NAME.yaml (its `name` only labels it) with FIELD=VALUE overrides applied, as keyword arguments
    for robolearn.typed_config.dataclass_from_dict."""
    import dataclasses

    path = _named_file(configs_dir() / group, name, f"no {group} config", "configs")
    raw = _yaml_file(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of {config_class.__name__} fields")
    values = {k: v for k, v in raw.items() if k != "name"}
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(config_class)})
    if unknown:
        raise ConfigError(f"{path} sets {unknown}, which {config_class.__name__} does not have")
    return {**values, **parse_assignments(overrides, config_class, flag)}


def parse_assignments(assignments: Sequence[str], config_class: type, flag: str) -> dict[str, Any]:
    """`FIELD=VALUE` strings -> {field: YAML-parsed value}, every field checked against the dataclass's types."""
    import dataclasses
    import typing

    import yaml

    fields = {f.name for f in dataclasses.fields(config_class) if f.init}
    hints = typing.get_type_hints(config_class)
    changes = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ConfigError(f"{flag} expects FIELD=VALUE with a field of {config_class.__name__} "
                              f"({', '.join(sorted(fields))}); got {item!r}")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"{flag}: cannot read the value of {item!r}: {' '.join(str(err).split())}") from err
        changes[key] = _typed(key, parsed, hints[key])
    return changes


def _typed(key: str, value: Any, annotation: Any) -> Any:
    """`value` as the field's annotation wants it; YAML reads 3e-4 as a string, which a float field takes as 3e-4."""
    try:
        return check_value(value, annotation, key)
    except ConfigError:
        if isinstance(value, str):
            with contextlib.suppress(ValueError, ConfigError):
                number = float(value)
                if math.isfinite(number):
                    return check_value(number, annotation, key)
        raise


def with_overrides(config: Any, assignments: Sequence[str]) -> Any:
    """Inference-time settings (`scheduler=ddpm`, `num_inference_steps=4`, ...) applied to a policy config."""
    import dataclasses

    changes = parse_assignments(assignments, type(config), "--set")
    try:
        return dataclasses.replace(config, **changes)  # re-validates in the config's __post_init__
    except (TypeError, ValueError) as err:
        raise ConfigError(f"--set {' '.join(assignments)}: {err}") from err
