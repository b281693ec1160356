"""robomimic HDF5 datasets <-> EpisodeStore.

The robomimic layout (its docs, "Dataset structure")::

    data/                  attrs: total (steps in the file), env_args (JSON: env_name, type, env_kwargs, ...)
      demo_<n>/            attrs: num_samples, model_file (MJCF XML, robosuite files)
        actions (T, A)  rewards (T,)  dones (T,)  states (T, S) (flattened MuJoCo states)
        obs/<key> (T, ...)          next_obs/<key> (T, ...)
    mask/<filter>          demo names as bytes (train, valid, 20_percent, ...)

Import mapping and decisions:

- `obs/<key>` -> store key `<key>`; `actions` -> `action`, `rewards` -> `reward`, `dones` -> `done` (uint8 0/1),
  `states` -> `sim_state`. Demos are read in numeric order (demo_2 before demo_10); gaps in the numbering are fine.
- Float64 observations, actions and rewards become float32, as the store's contract asks of low-dim data. That
  rounds each value to float32 precision (relative error below 6e-8, the same as robomimic's own loader, which
  casts to float32 too); a value that float32 cannot hold (|x| > 3.4e38) is refused rather than made infinite.
  `sim_state` stays float64: MuJoCo states restore the simulator and must not drift. `keep_dtypes=True` keeps
  every dtype as it is in the file. Images (uint8 HxWxC) are kept as they are.
- next_obs is not stored as data: robomimic writes it as obs shifted by one step, plus the observation after the
  last action. Import checks that claim exactly for every demo and key, and keeps that final observation in the
  episode metadata (`final_next_obs`, exact bytes), so export rebuilds next_obs without loss. A file whose
  next_obs is not shifted obs is refused, unless imported with `next_obs="keep"` (stored as `next_obs.<key>`).
- Episode metadata: `demo` (the source name), `masks` (filters that list it), `model_file` and any other demo
  attributes (`attrs`). Store attrs: `env_args` (parsed JSON), `masks` (every filter name, empty ones included)
  and other `data` attributes (`data_attrs`). `num_samples` must match each demo's length; a `total` that is not
  the sum is warned about (robomimic's reader ignores it); both are recomputed on export.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import tempfile
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
from tqdm import tqdm

from robolearn.data.store import EpisodeStore, StoreFormatError

_DEMO = re.compile(r"demo_(\d+)")
# robomimic dataset name -> store key; obs keys keep their names
RENAMED = {"actions": "action", "rewards": "reward", "dones": "done", "states": "sim_state"}
_OPTIONAL = ("rewards", "dones", "states")
_DEMO_ENTRIES = {"actions", *_OPTIONAL, "obs", "next_obs"}
NEXT_OBS_PREFIX = "next_obs."


# ---------------------------------------------------------------------------------------------- small helpers
def _attr_value(value: Any) -> Any:
    """An HDF5 attribute as a JSON value, or None when it has no JSON form."""
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8")
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return value.tolist()
    return None


def _read_attrs(obj: h5py.HLObject, skip: set[str], where: str) -> dict[str, Any]:
    kept = {}
    for name, value in obj.attrs.items():
        if name in skip:
            continue
        converted = _attr_value(value)
        if converted is None:
            warnings.warn(f"{where}: attribute {name!r} of type {type(value).__name__} has no JSON form; not kept",
                          stacklevel=3)
            continue
        kept[name] = converted
    return kept


def pack_array(value: np.ndarray) -> dict[str, Any]:
    """An array as JSON-safe metadata (dtype, shape, zlib-compressed bytes in base64): exact, and small."""
    value = np.ascontiguousarray(value)
    return {"dtype": value.dtype.str, "shape": list(value.shape),
            "zlib_base64": base64.b64encode(zlib.compress(value.tobytes())).decode("ascii")}


def unpack_array(packed: Mapping[str, Any]) -> np.ndarray:
    raw = zlib.decompress(base64.b64decode(packed["zlib_base64"]))
    return np.frombuffer(raw, dtype=np.dtype(packed["dtype"])).reshape(packed["shape"]).copy()


def _first_step(mask: np.ndarray) -> int:
    return int(np.argmax(mask.reshape(len(mask), -1).any(axis=1)))


def _sorted_demos(data: h5py.Group, source: Path) -> list[str]:
    numbered = []
    for name in data:
        match = _DEMO.fullmatch(name)
        if match is None or not isinstance(data[name], h5py.Group):
            raise StoreFormatError(f"{source}: data/{name} is not a demo group; robomimic files hold only "
                                   f"data/demo_<n> groups under data/")
        numbered.append((int(match.group(1)), name))
    if not numbered:
        raise StoreFormatError(f"{source}: data/ has no demo_<n> groups; there is nothing to import")
    return [name for _, name in sorted(numbered)]


def _read_masks(file: h5py.File, demos: list[str], source: Path) -> dict[str, set[str]]:
    masks: dict[str, set[str]] = {}
    if "mask" not in file:
        return masks
    known = set(demos)
    for name, dataset in file["mask"].items():
        if not isinstance(dataset, h5py.Dataset):
            raise StoreFormatError(f"{source}: mask/{name} is a group; filter keys are datasets of demo names")
        members = {m.decode("utf-8") if isinstance(m, bytes) else str(m) for m in np.asarray(dataset[()]).reshape(-1)}
        unknown = sorted(members - known)
        if unknown:
            raise StoreFormatError(f"{source}: mask/{name} lists {unknown[:5]}, which are not groups under data/")
        masks[name] = members
    return masks


def _parse_env_args(data: h5py.Group, source: Path) -> dict[str, Any] | None:
    raw = data.attrs.get("env_args")
    if raw is None:
        return None
    raw = raw.decode("utf-8") if isinstance(raw, (bytes, np.bytes_)) else str(raw)
    try:
        env_args = json.loads(raw)
    except json.JSONDecodeError as err:
        raise StoreFormatError(f"{source}: data.attrs['env_args'] is not valid JSON ({err})") from err
    if not isinstance(env_args, dict):
        raise StoreFormatError(f"{source}: data.attrs['env_args'] must be a JSON object, got {type(env_args).__name__}")
    return env_args


def _check_total(data: h5py.Group, demos: list[str], source: Path) -> None:
    """Warn when `total` disagrees with the demos: the data is still consistent, robomimic's reader ignores it."""
    total = data.attrs.get("total")
    actions = [data[name].get("actions") for name in demos]
    if total is None or not all(isinstance(a, h5py.Dataset) and a.ndim for a in actions):
        return  # a demo without actions is reported, naming it, when it is read
    steps = sum(a.shape[0] for a in actions)
    if int(total) != steps:
        warnings.warn(f"{source}: data.attrs['total'] is {int(total)} but the demos hold {steps} steps; "
                      f"importing the demos as they are", stacklevel=3)


def _to_store_dtype(where: str, value: np.ndarray, keep_dtypes: bool) -> np.ndarray:
    """Refuse NaN/inf (naming demo and key); float64 -> float32 unless a value would overflow."""
    if value.dtype.kind != "f":
        return value
    bad = ~np.isfinite(value)
    if bad.any():
        raise ValueError(f"{where} has NaN or infinite values (first at step {_first_step(bad)})")
    if keep_dtypes or value.dtype.itemsize <= 4:
        return value
    with np.errstate(over="ignore"):  # overflow is reported below, naming the value and step
        out = value.astype(np.float32)
    overflow = np.isinf(out)
    if overflow.any():
        step = _first_step(overflow)
        raise ValueError(f"{where}: value {value[overflow].flat[0]!r} at step {step} is outside float32's range; "
                         f"import with keep_dtypes=True to keep float64")
    return out


def _dones(where: str, value: np.ndarray, keep_dtypes: bool) -> np.ndarray:
    if keep_dtypes:
        return _to_store_dtype(where, value, True)
    bad = (value != 0) & (value != 1)
    if bad.any():
        raise ValueError(f"{where} holds {value[bad].flat[0]!r} at step {_first_step(bad)}; dones must be 0 or 1 "
                         f"(import with keep_dtypes=True to keep them as they are)")
    return value.astype(np.uint8)


# ---------------------------------------------------------------------------------------------- import
class _Plan:
    """What every demo must hold, taken from the first demo (robomimic files are uniform)."""

    def __init__(self, first: h5py.Group, name: str, obs_keys: Sequence[str] | None, source: Path):
        self.optional = [k for k in _OPTIONAL if k in first]
        available = sorted(first["obs"]) if "obs" in first else []
        if obs_keys is not None:
            missing = sorted(set(obs_keys) - set(available))
            if missing:
                raise KeyError(f"{source}: {name}/obs has no keys {missing}; it has {available}")
        self.obs = list(obs_keys) if obs_keys is not None else available
        self.all_obs = obs_keys is None
        self.next_obs = "next_obs" in first
        clash = sorted(set(self.obs) & set(RENAMED.values()))
        if clash:
            raise StoreFormatError(f"{source}: obs keys {clash} collide with the store keys robomimic datasets map to "
                                   f"(actions -> action, ...); import with obs_keys=... to leave them out")


def _read_demo(group: h5py.Group, name: str, plan: _Plan, source: Path, keep_dtypes: bool,
               next_obs: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    if "actions" not in group or not isinstance(group["actions"], h5py.Dataset):
        raise StoreFormatError(f"{source}: {name} has no 'actions' dataset; every robomimic demo needs one")
    actions = group["actions"][()]
    steps = len(actions) if actions.ndim else 0
    if steps == 0:
        raise StoreFormatError(f"{source}: {name}/actions is empty; robomimic demos have at least one step")
    declared = group.attrs.get("num_samples")
    if declared is not None and int(declared) != steps:
        raise StoreFormatError(f"{source}: {name} has num_samples = {int(declared)} but {name}/actions has {steps} steps")

    def dataset(path: str) -> np.ndarray:
        value = group[path][()]
        if value.ndim == 0 or len(value) != steps:
            got = len(value) if value.ndim else "no time axis"
            raise StoreFormatError(f"{source}: {name}/{path} has {got} steps but {name}/actions has {steps}; "
                                   f"every dataset of a demo has one row per step")
        return value

    present = [k for k in _OPTIONAL if k in group]
    if present != plan.optional:
        raise StoreFormatError(f"{source}: {name} has datasets {present} of {list(_OPTIONAL)} but the first demo has "
                               f"{plan.optional}; every demo must hold the same datasets")
    obs_present = sorted(group["obs"]) if "obs" in group else []
    if (plan.all_obs and obs_present != plan.obs) or not set(plan.obs) <= set(obs_present):
        raise StoreFormatError(f"{source}: {name}/obs has keys {obs_present} but the first demo has {plan.obs}; "
                               f"every demo must hold the same observations")
    if ("next_obs" in group) != plan.next_obs:
        raise StoreFormatError(f"{source}: {name} {'has' if 'next_obs' in group else 'lacks'} next_obs, unlike the first "
                               f"demo; every demo must hold the same datasets")

    arrays = {"action": _to_store_dtype(f"{name}/actions", actions, keep_dtypes)}
    for key in plan.optional:
        value = dataset(key)
        if key == "dones":
            arrays["done"] = _dones(f"{name}/dones", value, keep_dtypes)
        else:  # states keep float64: they restore the simulator exactly
            arrays[RENAMED[key]] = _to_store_dtype(f"{name}/{key}", value, keep_dtypes or key == "states")
    final: dict[str, Any] = {}
    for key in plan.obs:
        obs = dataset(f"obs/{key}")
        arrays[key] = _to_store_dtype(f"{name}/obs/{key}", obs, keep_dtypes)
        if not plan.next_obs:
            continue
        if key not in group["next_obs"]:
            raise StoreFormatError(f"{source}: {name}/next_obs has no {key!r}, but {name}/obs has; next_obs mirrors obs")
        nxt = dataset(f"next_obs/{key}")
        if nxt.shape != obs.shape or nxt.dtype != obs.dtype:
            raise StoreFormatError(f"{source}: {name}/next_obs/{key} has shape {nxt.shape} dtype {nxt.dtype}, "
                                   f"{name}/obs/{key} has {obs.shape} {obs.dtype}")
        if next_obs == "keep":
            arrays[NEXT_OBS_PREFIX + key] = _to_store_dtype(f"{name}/next_obs/{key}", nxt, keep_dtypes)
            continue
        differs = nxt[:-1] != obs[1:]
        if differs.any():
            raise StoreFormatError(f"{source}: {name}/next_obs/{key} is not {name}/obs/{key} shifted by one step "
                                   f"(first difference at step {_first_step(differs)}); import with next_obs='keep' "
                                   f"to store next_obs as its own keys ({NEXT_OBS_PREFIX}{key})")
        final[key] = pack_array(_to_store_dtype(f"{name}/next_obs/{key}", nxt[-1:], keep_dtypes)[0])

    meta: dict[str, Any] = {"source": f"robomimic:{source.name}", "demo": name}
    model_file = group.attrs.get("model_file")
    if model_file is not None:
        meta["model_file"] = _attr_value(model_file)
    extra = _read_attrs(group, {"num_samples", "model_file"}, f"{source}: {name}")
    if extra:
        meta["attrs"] = extra
    if final:
        meta["final_next_obs"] = final
    return arrays, meta


def import_robomimic(source: str | os.PathLike, dest: str | os.PathLike, *, task: str | None = None,
                     fps: float | None = None, obs_keys: Sequence[str] | None = None, keep_dtypes: bool = False,
                     next_obs: Literal["verify", "keep"] = "verify", overwrite: bool = False,
                     progress: bool = True) -> EpisodeStore:
    """Copy a robomimic HDF5 file into a new EpisodeStore at `dest` (see the module docstring for the mapping).

    `task` defaults to env_args' env_name and `fps` to its env_kwargs.control_freq; `obs_keys` picks observations
    (e.g. only the low-dim ones of an image file). A failed import leaves no store behind.
    """
    source = Path(source)
    if next_obs not in ("verify", "keep"):
        raise ValueError(f"next_obs must be 'verify' or 'keep', got {next_obs!r}")
    if not source.exists():
        raise FileNotFoundError(f"no robomimic dataset at {source}")
    if source.is_dir() or not h5py.is_hdf5(source):
        raise StoreFormatError(f"{source} is not an HDF5 file; robomimic datasets are .hdf5 files")
    with h5py.File(source, "r") as file:
        data = file.get("data")
        if not isinstance(data, h5py.Group):
            raise StoreFormatError(f"{source} has no 'data' group, so it is not a robomimic dataset "
                                   f"(expected data/demo_<n>/actions, obs/..., with data.attrs['env_args'])")
        demos = _sorted_demos(data, source)
        env_args = _parse_env_args(data, source)
        masks = _read_masks(file, demos, source)
        plan = _Plan(data[demos[0]], demos[0], obs_keys, source)
        _check_total(data, demos, source)
        ignored = sorted({entry for name in demos for entry in data[name]} - _DEMO_ENTRIES)
        if ignored:
            warnings.warn(f"{source}: demos hold {ignored}, which robomimic's format does not define; not imported",
                          stacklevel=2)
        attrs: dict[str, Any] = {"imported_from": str(source.resolve()), "format": "robomimic",
                                 "env_args": env_args, "masks": sorted(masks)}
        data_attrs = _read_attrs(data, {"total", "env_args"}, f"{source}: data")
        if data_attrs:
            attrs["data_attrs"] = data_attrs
        if env_args is not None:
            task = task if task is not None else env_args.get("env_name")
            freq = (env_args.get("env_kwargs") or {}).get("control_freq")
            fps = fps if fps is not None else (float(freq) if isinstance(freq, (int, float)) else None)

        def episodes() -> Iterator[tuple[dict[str, np.ndarray], dict[str, Any]]]:
            for name in tqdm(demos, desc=f"import {source.name}", unit="demo", disable=not progress):
                arrays, meta = _read_demo(data[name], name, plan, source, keep_dtypes, next_obs)
                meta["masks"] = sorted(m for m, members in masks.items() if name in members)
                yield arrays, meta

        out = EpisodeStore.create(dest, fps=fps, task=task, overwrite=overwrite, attrs=attrs)
        try:
            out.append_episodes(episodes(), commit_every=32)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)  # a half-imported copy is worse than none: the source is intact
            raise
    return out


# ---------------------------------------------------------------------------------------------- export
def _demo_names(metas: list[dict[str, Any]]) -> list[str]:
    """The recorded demo names when they are all valid and already in numeric order, else demo_0, demo_1, ..."""
    numbers = []
    for meta in metas:
        match = _DEMO.fullmatch(str(meta.get("demo", "")))
        if match is None:
            break
        numbers.append(int(match.group(1)))
    if len(numbers) == len(metas) and all(a < b for a, b in zip(numbers, numbers[1:])):
        return [meta["demo"] for meta in metas]
    return [f"demo_{i}" for i in range(len(metas))]


def _export_masks(store: EpisodeStore, metas: list[dict[str, Any]], names: list[str],
                  valid_every: int) -> dict[str, list[str]]:
    recorded = set(store.attrs.get("masks") or []) | {m for meta in metas for m in meta.get("masks", [])}
    masks = {m: [n for n, meta in zip(names, metas) if m in meta.get("masks", [])] for m in sorted(recorded)}
    every_recorded = all("masks" in meta for meta in metas)
    if not (every_recorded and {"train", "valid"} <= recorded):
        valid = [i % valid_every == valid_every - 1 for i in range(len(names))]
        masks["train"] = [n for n, v in zip(names, valid) if not v]
        masks["valid"] = [n for n, v in zip(names, valid) if v]
    return masks


def _check_env_args(env_args: Any) -> str:
    if not isinstance(env_args, Mapping):
        raise TypeError(f"env_args must be a mapping (env_name, type, env_kwargs, ...), got {type(env_args).__name__}")
    try:
        return json.dumps(dict(env_args), indent=4)
    except (TypeError, ValueError) as err:
        raise TypeError(f"env_args must be JSON-serializable: {err}") from err


def _h5_attr(value: Any) -> Any:
    return np.asarray(value) if isinstance(value, list) else value


def export_robomimic(store: EpisodeStore | str | os.PathLike, dest: str | os.PathLike, *, action_key: str = "action",
                     obs_keys: Sequence[str] | None = None, env_args: Mapping[str, Any] | None = None,
                     valid_every: int = 10, overwrite: bool = False) -> Path:
    """Write a store as a robomimic HDF5 file, readable by robomimic's SequenceDataset; returns `dest`.

    `obs_keys` defaults to every key but the action, `reward`, `done`, `sim_state` (written as `states`) and
    `next_obs.*`. next_obs is obs shifted by one step; its last row is the `final_next_obs` recorded at import,
    else the last observation repeated. A store without `reward` gets zero rewards; without `done`, dones are 1
    on the last step of each episode only. Masks: those recorded at import are written back; mask/train and
    mask/valid come from the import when every episode carries them, otherwise every `valid_every`-th episode
    (indices valid_every-1, 2*valid_every-1, ...) is valid and the rest train. env_args: the argument, else the
    one recorded at import, else {"env_name": task, "type": null, "env_kwargs": {}} (enough for SequenceDataset;
    robomimic's rollout tools need a real one). Demo names recorded at import are kept when they are in order.
    The file is written under a temporary name and renamed, so `dest` is never half-written.
    """
    store = store if isinstance(store, EpisodeStore) else EpisodeStore.open(store)
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} exists; pass overwrite=True to replace it")
    if store.n_episodes == 0:
        raise ValueError(f"store {store.path} has no episodes; there is nothing to export")
    if not isinstance(valid_every, int) or valid_every < 2:
        raise ValueError(f"valid_every must be an integer >= 2 (every valid_every-th episode is valid), got {valid_every!r}")
    keys = store.keys
    if action_key not in keys:
        raise KeyError(f"store {store.path} has no action key {action_key!r}; it has {keys} (pass action_key=...)")
    special = {action_key, "reward", "done", "sim_state"}
    if obs_keys is None:
        obs_keys = [k for k in keys if k not in special and not k.startswith(NEXT_OBS_PREFIX)]
    missing = sorted(set(obs_keys) - set(keys))
    if missing:
        raise KeyError(f"store {store.path} has no keys {missing} to export as observations; it has {keys}")
    if env_args is None:
        env_args = store.attrs.get("env_args") or {"env_name": store.task, "type": None, "env_kwargs": {}}
    env_json = _check_env_args(env_args)

    metas = [store.episode_meta(i) for i in range(store.n_episodes)]
    names = _demo_names(metas)
    masks = _export_masks(store, metas, names, valid_every)
    specs = store.specs
    read = [action_key, *obs_keys, *(k for k in ("reward", "done", "sim_state") if k in keys),
            *(NEXT_OBS_PREFIX + k for k in obs_keys if NEXT_OBS_PREFIX + k in keys)]

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as file:
            data = file.create_group("data")
            for key, value in (store.attrs.get("data_attrs") or {}).items():
                data.attrs[key] = _h5_attr(value)
            for i, (name, meta) in enumerate(zip(names, metas)):
                ep = store.episode(i, read)
                steps = len(ep[action_key])
                group = data.create_group(name)
                group.create_dataset("actions", data=ep[action_key])
                group.create_dataset("rewards", data=ep["reward"] if "reward" in ep else np.zeros(steps, np.float32))
                group.create_dataset("dones", data=_export_dones(ep.get("done"), steps, name))
                if "sim_state" in ep:
                    group.create_dataset("states", data=ep["sim_state"])
                obs, nxt = group.create_group("obs"), group.create_group("next_obs")
                final = meta.get("final_next_obs") or {}
                for key in obs_keys:
                    obs.create_dataset(key, data=ep[key])
                    nxt.create_dataset(key, data=_next_obs(ep, key, final.get(key), specs[key].shape, name))
                group.attrs["num_samples"] = steps
                if "model_file" in meta:
                    group.attrs["model_file"] = meta["model_file"]
                for key, value in (meta.get("attrs") or {}).items():
                    group.attrs[key] = _h5_attr(value)
            data.attrs["total"] = store.n_steps
            data.attrs["env_args"] = env_json
            mask = file.create_group("mask")
            for key, members in masks.items():
                mask.create_dataset(key, data=np.array(members, dtype="S"))
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return dest


def _export_dones(done: np.ndarray | None, steps: int, name: str) -> np.ndarray:
    if done is None:
        out = np.zeros(steps, np.int64)
        out[-1] = 1
        return out
    bad = (done != 0) & (done != 1)
    if bad.any():
        raise ValueError(f"episode {name}: key 'done' holds {done[bad].flat[0]!r} at step {_first_step(bad)}; "
                         f"robomimic dones are 0 or 1")
    return done.astype(np.int64)


def _next_obs(ep: dict[str, np.ndarray], key: str, final: Mapping[str, Any] | None, shape: tuple[int, ...],
              name: str) -> np.ndarray:
    if NEXT_OBS_PREFIX + key in ep:
        return ep[NEXT_OBS_PREFIX + key]
    obs = ep[key]
    last = obs[-1]
    if final is not None:
        last = unpack_array(final)
        if last.shape != tuple(shape) or last.dtype != obs.dtype:
            raise ValueError(f"episode {name}: final_next_obs[{key!r}] has shape {last.shape} dtype {last.dtype}, "
                             f"the store's {key!r} has {tuple(shape)} {obs.dtype}; fix or drop that metadata")
    return np.concatenate([obs[1:], last[None]], axis=0)


__all__ = ["import_robomimic", "export_robomimic", "pack_array", "unpack_array", "RENAMED", "NEXT_OBS_PREFIX"]
