"""Config files and command-line overrides: hydra composition of configs/, configs/GROUP/NAME.yaml for the
evaluation models, and typed FIELD=VALUE overrides checked against the config dataclasses."""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from robolearn.paths import configs_dir


def compose(config_name: str, overrides: Sequence[str]) -> dict[str, Any]:
    """Compose a hydra config from the project's configs/ folder into a plain dict."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    config_dir = configs_dir()
    if not (config_dir / f"{config_name}.yaml").exists():
        raise FileNotFoundError(f"no config {config_name}.yaml in {config_dir}")
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def task_by_name(name: str) -> Any:
    """configs/task/NAME.yaml as a TaskConfig."""
    import yaml

    from robolearn.task import TaskConfig

    folder = configs_dir() / "task"
    path = folder / f"{name}.yaml"
    if "/" in name or not path.exists():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        raise FileNotFoundError(f"no task config {name!r} in {folder} (tasks: {known})")
    return TaskConfig(**yaml.safe_load(path.read_text()))


def model_config(group: str, name: str, config_class: type, overrides: Sequence[str], flag: str) -> dict[str, Any]:
    """configs/GROUP/NAME.yaml (its `name` only labels it) with FIELD=VALUE overrides applied, as keyword arguments."""
    import dataclasses

    import yaml

    folder = configs_dir() / group
    path = folder / f"{name}.yaml"
    if "/" in name or not path.exists():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        raise FileNotFoundError(f"no {group} config {name!r} in {folder} (configs: {known})")
    values = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k != "name"}
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(config_class)})
    if unknown:
        raise ValueError(f"{path} sets {unknown}, which {config_class.__name__} does not have")
    return {**values, **parse_assignments(overrides, config_class, flag)}


def parse_assignments(assignments: Sequence[str], config_class: type, flag: str) -> dict[str, Any]:
    """`FIELD=VALUE` strings -> {field: YAML-parsed value}, every field checked against the dataclass."""
    import dataclasses

    import yaml

    fields = {f.name: f for f in dataclasses.fields(config_class)}
    changes = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"{flag} expects FIELD=VALUE with a field of {config_class.__name__} "
                             f"({', '.join(sorted(fields))}); got {item!r}")
        changes[key] = _typed(key, yaml.safe_load(value), fields[key])
    return changes


def _typed(key: str, value: Any, spec: Any) -> Any:
    """A parsed value checked against the field's default: YAML reads 3e-4 as a string, a float field wants a
    number, and a wrong type is the user's mistake to name here rather than a TypeError deep in a config."""
    import dataclasses

    default = spec.default if spec.default is not dataclasses.MISSING else (
        spec.default_factory() if spec.default_factory is not dataclasses.MISSING else None)
    if isinstance(default, bool) or default is None:
        want: type | None = bool if isinstance(default, bool) else None
    else:
        want = next((t for t in (int, float, str, list, dict) if isinstance(default, t)), None)
    if want is None or (isinstance(value, want) and not (want is not bool and isinstance(value, bool))):
        return value
    if want is float and not isinstance(value, bool):
        with contextlib.suppress(TypeError, ValueError):
            return float(value)
    raise ValueError(f"{key} must be {want.__name__}, got {value!r}")


def with_overrides(config: Any, assignments: Sequence[str]) -> Any:
    """Inference-time settings (`scheduler=ddpm`, `num_inference_steps=4`, ...) applied to a policy config."""
    import dataclasses

    return dataclasses.replace(config, **parse_assignments(assignments, type(config), "--set"))  # re-validates
