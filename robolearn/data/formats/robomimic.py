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
- Other per-step datasets that newer robomimic and MimicGen files add (`actions_abs`, `action_dict/abs_pos`,
  `states/<part>`, ...) become keys with `/` written as `.` (`actions_abs`, `action_dict.abs_pos`,
  `sim_state.<part>`) and go back to their paths on export. Datasets without one row per step in every demo
  (e.g. MimicGen's `src_demo_inds`) are not imported, with a warning naming them.
- Float64 observations, actions and rewards become float32, as the store's contract asks of low-dim data. That
  rounds each value to float32 precision (relative error below 6e-8; robomimic's own loader casts actions and
  rewards to float32 too); a value that float32 cannot hold (|x| > 3.4e38) is refused rather than made infinite.
  `sim_state` stays float64: MuJoCo states restore the simulator and must not drift. `keep_dtypes=True` keeps
  every dtype as it is in the file. Images (uint8 HxWxC) are kept as they are.
- next_obs is not stored as data: robomimic writes it as obs shifted by one step, plus the observation after the
  last action. Import checks that claim exactly for every demo and key, and keeps that final observation in the
  episode metadata (`final_next_obs`, exact bytes), so export rebuilds next_obs without loss. A file whose
  next_obs is not shifted obs is refused, unless imported with `next_obs="keep"` (stored as `next_obs.<key>`).
- Episode metadata: `demo` (the source name), `masks` (filters that list it), `model_file` and any other demo
  attributes (`attrs`). Store attrs: `env_args` (parsed JSON), `masks` (every filter name, empty ones included),
  other `data` attributes (`data_attrs`) and `extra_datasets` (store key -> HDF5 path). `num_samples` must match
  each demo's length; a `total` that is not the sum is warned about (robomimic's reader ignores it); both are
  recomputed on export. The file's structure is checked for every demo before the store is created.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
from tqdm import tqdm

from robolearn.data.formats import source_errors
from robolearn.data.formats.output import building, check_separate, new_store
from robolearn.data.store import EpisodeStore, StoreFormatError

_DEMO = re.compile(r"demo_(\d+)")
# robomimic dataset name -> store key; obs keys keep their names
RENAMED = {"actions": "action", "rewards": "reward", "dones": "done", "states": "sim_state"}
_DOCUMENTED = ("actions", "rewards", "dones", "states")  # strict: same datasets in every demo, one row per step
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


def _count_attr(value: Any, where: str) -> int:
    """A step count attribute (num_samples, total): a non-negative integer, as robomimic writes it."""
    value = _attr_value(value)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise StoreFormatError(f"{where} is {value!r}; it must be a non-negative integer count of steps")
    return value


def _reading(source: Path) -> contextlib.AbstractContextManager[None]:
    return source_errors.reading(source, "a robomimic HDF5 file", "the file is damaged or not in robomimic's layout")


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


def store_key(path: str) -> str:
    """The store key of a dataset path inside a demo: actions -> action, states/qpos -> sim_state.qpos, a/b -> a.b."""
    head, _, rest = path.partition("/")
    head = RENAMED.get(head, head)
    return f"{head}.{rest.replace('/', '.')}" if rest else head


def _first_step(mask: np.ndarray) -> int:
    return int(np.argmax(mask.reshape(len(mask), -1).any(axis=1)))


def _rows(dataset: h5py.Dataset) -> int | None:
    return dataset.shape[0] if dataset.ndim else None


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


# ---------------------------------------------------------------------------------------------- layout check
def _datasets(group: h5py.Group, prefix: str = "") -> dict[str, h5py.Dataset]:
    """Every dataset of a demo by path, except observations (obs/, next_obs/)."""
    found: dict[str, h5py.Dataset] = {}
    for name, item in group.items():
        path = prefix + name
        if isinstance(item, h5py.Group):
            if path not in ("obs", "next_obs"):
                found.update(_datasets(item, path + "/"))
        elif isinstance(item, h5py.Dataset):
            found[path] = item
    return found


def _obs_group(group: h5py.Group, name: str, which: str, source: Path) -> dict[str, h5py.Dataset] | None:
    if which not in group:
        return None
    entries = dict(group[which].items())
    bad = sorted(k for k, v in entries.items() if not isinstance(v, h5py.Dataset))
    if bad:
        raise StoreFormatError(f"{source}: {name}/{which}/{bad[0]} is a group; observations are datasets")
    return entries


def _stored_dtype(path: str, dtype: np.dtype, keep_dtypes: bool) -> np.dtype:
    """The dtype a dataset gets in the store (mirrors _read_demo's conversions)."""
    if keep_dtypes or dtype.kind != "f" or path.split("/")[0] == "states":
        return np.dtype(np.uint8) if path == "dones" and not keep_dtypes else dtype
    return dtype if dtype.itemsize <= 4 else np.dtype(np.float32)


def _check_signature(signatures: dict[str, tuple[str, tuple[int, ...], np.dtype]], name: str, path: str,
                     dataset: h5py.Dataset, keep_dtypes: bool, source: Path) -> None:
    """A numeric dtype, and the per-step shape and stored dtype of the first demo that has `path`."""
    if dataset.dtype.kind not in "biuf":
        raise StoreFormatError(f"{source}: {name}/{path} has dtype {dataset.dtype}; only numeric datasets (bool, int, "
                               f"float) can be imported")
    shape, dtype = dataset.shape[1:], _stored_dtype(path, dataset.dtype, keep_dtypes)
    first = signatures.setdefault(path, (name, shape, dtype))
    if (first[1], first[2]) != (shape, dtype):
        raise StoreFormatError(f"{source}: {name}/{path} has per-step shape {shape} dtype {dtype} but {first[0]}/{path} "
                               f"has {first[1]} {first[2]}; every demo must store a dataset the same way")


@dataclass
class _Layout:
    """What the file holds, checked for every demo before anything is written."""

    demos: list[str]
    obs: list[str]
    next_obs: bool
    arrays: dict[str, str]  # dataset path inside a demo -> store key (observations excluded)
    ignored: list[str] = field(default_factory=list)  # without one row per step in every demo
    non_numeric: list[str] = field(default_factory=list)  # e.g. language strings


def _scan(data: h5py.Group, demos: list[str], obs_keys: Sequence[str] | None, next_obs: str,
          source: Path, keep_dtypes: bool = False) -> _Layout:
    first_docs: list[str] | None = None
    signatures: dict[str, tuple[str, tuple[int, ...], np.dtype]] = {}  # path -> (first demo, per-step shape, dtype)
    first_obs: list[str] = []
    has_next = False
    candidates: dict[str, int] = {}  # undocumented path -> demos where it has one row per step
    seen: set[str] = set()
    non_numeric: set[str] = set()
    for index, name in enumerate(demos):
        group = data[name]
        actions = group.get("actions")
        if not isinstance(actions, h5py.Dataset):
            raise StoreFormatError(f"{source}: {name} has no 'actions' dataset; every robomimic demo needs one")
        steps = _rows(actions) or 0
        if steps == 0:
            raise StoreFormatError(f"{source}: {name}/actions is empty; robomimic demos have at least one step")
        declared = group.attrs.get("num_samples")
        declared = None if declared is None else _count_attr(declared, f"{source}: {name}.attrs['num_samples']")
        if declared is not None and declared != steps:
            raise StoreFormatError(f"{source}: {name} has num_samples = {declared} but {name}/actions has "
                                   f"{steps} steps")
        paths = _datasets(group)
        # robomimic's docs let non-robosuite files leave `states` empty: an empty one is not data, so it is skipped
        paths = {p: d for p, d in paths.items() if not (p.split("/")[0] == "states" and _rows(d) == 0)}
        docs = sorted(p for p in paths if p.split("/")[0] in _DOCUMENTED)
        obs = _obs_group(group, name, "obs", source) or {}
        nxt = _obs_group(group, name, "next_obs", source)
        if index == 0:
            first_docs, first_obs, has_next = docs, sorted(obs), nxt is not None
            if obs_keys is not None:
                missing = sorted(set(obs_keys) - set(obs))
                if missing:
                    raise KeyError(f"{source}: {name}/obs has no keys {missing}; it has {first_obs}")
                first_obs = list(obs_keys)
        if docs != first_docs:
            raise StoreFormatError(f"{source}: {name} has datasets {docs} but the first demo has {first_docs}; "
                                   f"every demo must hold the same datasets")
        if (obs_keys is None and sorted(obs) != first_obs) or not set(first_obs) <= set(obs):
            raise StoreFormatError(f"{source}: {name}/obs has keys {sorted(obs)} but the first demo has {first_obs}; "
                                   f"every demo must hold the same observations")
        if (nxt is not None) != has_next:
            raise StoreFormatError(f"{source}: {name} {'has' if nxt is not None else 'lacks'} next_obs, unlike the "
                                   f"first demo; every demo must hold the same datasets")
        for path, dataset in [*((p, paths[p]) for p in docs), *((f"obs/{k}", obs[k]) for k in first_obs)]:
            if _rows(dataset) != steps:
                got = _rows(dataset) if dataset.ndim else "no time axis"
                raise StoreFormatError(f"{source}: {name}/{path} has {got} steps but {name}/actions has {steps}; "
                                       f"every dataset of a demo has one row per step")
            _check_signature(signatures, name, path, dataset, keep_dtypes, source)
        for key in first_obs if nxt is not None else []:
            if key not in nxt:
                raise StoreFormatError(f"{source}: {name}/next_obs has no {key!r}, but {name}/obs has; "
                                       f"next_obs mirrors obs")
            if nxt[key].shape != obs[key].shape or nxt[key].dtype != obs[key].dtype:
                raise StoreFormatError(f"{source}: {name}/next_obs/{key} has shape {nxt[key].shape} dtype "
                                       f"{nxt[key].dtype}, {name}/obs/{key} has {obs[key].shape} {obs[key].dtype}")
        for path, dataset in paths.items():
            if path.split("/")[0] not in _DOCUMENTED:
                seen.add(path)  # imported only when numeric with one row per step in every demo
                if dataset.dtype.kind not in "biuf":
                    non_numeric.add(path)
                fits = _rows(dataset) == steps and dataset.dtype.kind in "biuf"
                candidates[path] = candidates.get(path, 0) + fits
                if fits:
                    _check_signature(signatures, name, path, dataset, keep_dtypes, source)
    extras = sorted(p for p, n in candidates.items() if n == len(demos))
    arrays = {p: store_key(p) for p in [*(first_docs or []), *extras]}
    if next_obs == "keep" and has_next:
        arrays.update({f"next_obs/{k}": NEXT_OBS_PREFIX + k for k in first_obs})
    keys = [*arrays.values(), *first_obs]
    clash = sorted({k for k in keys if keys.count(k) > 1})
    if clash:
        raise StoreFormatError(f"{source}: datasets map to the same store keys {clash} (obs keys keep their names, "
                               f"actions -> action, a/b -> a.b); import with obs_keys=... to leave observations out")
    return _Layout(demos, first_obs, has_next, arrays, sorted(seen - set(extras) - non_numeric), sorted(non_numeric))


# ---------------------------------------------------------------------------------------------- import
def _read_demo(group: h5py.Group, name: str, layout: _Layout, source: Path, keep_dtypes: bool,
               next_obs: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays: dict[str, np.ndarray] = {}
    for path, key in layout.arrays.items():
        value = group[path][()]
        if path == "dones":
            arrays[key] = _dones(f"{source}: {name}/dones", value, keep_dtypes)
        else:  # MuJoCo states keep float64: they restore the simulator exactly
            arrays[key] = _to_store_dtype(f"{source}: {name}/{path}", value, keep_dtypes or path.split("/")[0] == "states")
    final: dict[str, Any] = {}
    for key in layout.obs:
        obs = group["obs"][key][()]
        arrays[key] = _to_store_dtype(f"{source}: {name}/obs/{key}", obs, keep_dtypes)
        if not layout.next_obs or next_obs == "keep":
            continue
        nxt = group["next_obs"][key][()]
        differs = nxt[:-1] != obs[1:]
        if differs.any():
            raise StoreFormatError(f"{source}: {name}/next_obs/{key} is not {name}/obs/{key} shifted by one step "
                                   f"(first difference at step {_first_step(differs)}); import with next_obs='keep' "
                                   f"to store next_obs as its own keys ({NEXT_OBS_PREFIX}{key})")
        final[key] = pack_array(_to_store_dtype(f"{source}: {name}/next_obs/{key}", nxt[-1:], keep_dtypes)[0])

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


def _check_total(data: h5py.Group, demos: list[str], source: Path) -> None:
    """Warn when `total` disagrees with the demos: the data is still consistent, robomimic's reader ignores it."""
    total = data.attrs.get("total")
    total = None if total is None else _count_attr(total, f"{source}: data.attrs['total']")
    steps = sum(data[name]["actions"].shape[0] for name in demos)
    if total is not None and total != steps:
        warnings.warn(f"{source}: data.attrs['total'] is {total} but the demos hold {steps} steps; "
                      f"importing the demos as they are", stacklevel=3)


def import_robomimic(source: str | os.PathLike, dest: str | os.PathLike, *, task: str | None = None,
                     fps: float | None = None, obs_keys: Sequence[str] | None = None, keep_dtypes: bool = False,
                     next_obs: Literal["verify", "keep"] = "verify", overwrite: bool = False,
                     progress: bool = True) -> EpisodeStore:
    """Copy a robomimic HDF5 file into a new EpisodeStore at `dest` (see the module docstring for the mapping).

    `task` defaults to env_args' env_name and `fps` to its env_kwargs.control_freq; `obs_keys` picks observations
    (e.g. only the low-dim ones of an image file). The store is built at a temporary sibling and renamed into
    place when complete, so a failed or killed import leaves `dest` as it was; `overwrite` replaces only an
    existing EpisodeStore, and a `dest` overlapping `source` is refused.
    """
    source = Path(source)
    if next_obs not in ("verify", "keep"):
        raise ValueError(f"next_obs must be 'verify' or 'keep', got {next_obs!r}")
    if not source.exists():
        raise FileNotFoundError(f"no robomimic dataset at {source}")
    check_separate(source, dest)
    if source.is_dir() or not h5py.is_hdf5(source):
        raise StoreFormatError(f"{source} is not an HDF5 file; robomimic datasets are .hdf5 files")
    with _reading(source):
        file = h5py.File(source, "r")
    with file:
        with _reading(source):  # the layout, read and checked before anything is written
            data = file.get("data")
            if not isinstance(data, h5py.Group):
                raise StoreFormatError(f"{source} has no 'data' group, so it is not a robomimic dataset "
                                       f"(expected data/demo_<n>/actions, obs/..., with data.attrs['env_args'])")
            demos = _sorted_demos(data, source)
            env_args = _parse_env_args(data, source)
            masks = _read_masks(file, demos, source)
            layout = _scan(data, demos, obs_keys, next_obs, source, keep_dtypes)
            _check_total(data, demos, source)
            if layout.ignored:
                warnings.warn(f"{source}: {layout.ignored} do not have one row per step in every demo; not imported",
                              stacklevel=2)
            if layout.non_numeric:
                warnings.warn(f"{source}: {layout.non_numeric} are not numeric (a store holds numbers only); not imported",
                              stacklevel=2)
            attrs: dict[str, Any] = {"imported_from": str(source.resolve()), "format": "robomimic",
                                     "env_args": env_args, "masks": sorted(masks)}
            extra = {key: path for path, key in layout.arrays.items() if path not in RENAMED and not path.startswith("next_obs/")}
            if extra:
                attrs["extra_datasets"] = extra
            data_attrs = _read_attrs(data, {"total", "env_args"}, f"{source}: data")
            if data_attrs:
                attrs["data_attrs"] = data_attrs
            if env_args is not None:
                task = task if task is not None else env_args.get("env_name")
                freq = (env_args.get("env_kwargs") or {}).get("control_freq")
                fps = fps if fps is not None else (float(freq) if isinstance(freq, (int, float)) else None)

        def episodes() -> Iterator[tuple[dict[str, np.ndarray], dict[str, Any]]]:
            for name in tqdm(demos, desc=f"import {source.name}", unit="demo", disable=not progress):
                with _reading(source):
                    arrays, meta = _read_demo(data[name], name, layout, source, keep_dtypes, next_obs)
                meta["masks"] = sorted(m for m, members in masks.items() if name in members)
                yield arrays, meta

        with new_store(dest, overwrite=overwrite, fps=fps, task=task, attrs=attrs) as out:
            out.append_episodes(episodes(), commit_every=32)
    return EpisodeStore.open(dest)


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


def _is_hdf5_file(path: Path) -> bool:
    return path.is_file() and h5py.is_hdf5(path)


def _h5_attr(value: Any) -> Any:
    return np.asarray(value) if isinstance(value, list) else value


def export_robomimic(store: EpisodeStore | str | os.PathLike, dest: str | os.PathLike, *, action_key: str = "action",
                     obs_keys: Sequence[str] | None = None, env_args: Mapping[str, Any] | None = None,
                     valid_every: int = 10, overwrite: bool = False) -> Path:
    """Write a store as a robomimic HDF5 file, readable by robomimic's SequenceDataset; returns `dest`.

    `action_key` becomes `actions`. `obs_keys` defaults to every key but `action`, the action key, `reward`,
    `done`, `sim_state` (written as `states`), `next_obs.*` and the `extra_datasets` recorded at import (written
    back to their paths, e.g. `actions_abs`, `action_dict/abs_pos`). next_obs is obs shifted by one step; its
    last row is the `final_next_obs` recorded at import, else the last observation repeated.
    A store without `reward` gets zero rewards; without `done`, dones are 1 on the last step of each episode only.
    Masks: those recorded at import are written back; mask/train and mask/valid come from the import when every
    episode carries them, otherwise every `valid_every`-th episode (indices valid_every-1, 2*valid_every-1, ...)
    is valid and the rest train. env_args: the argument, else the one recorded at import, else
    {"env_name": task, "type": null, "env_kwargs": {}} (enough for SequenceDataset; robomimic's rollout tools need
    a real one). Demo names recorded at import are kept when they are in numeric order.
    The file is written under a temporary name and renamed, so `dest` is never half-written; `overwrite` replaces
    only an HDF5 file, and a `dest` overlapping the store is refused.
    """
    store = store if isinstance(store, EpisodeStore) else EpisodeStore.open(store)
    dest = Path(dest)
    check_separate(store.path, dest)
    if dest.exists() and not overwrite:  # before the checks below, which read the whole store
        raise FileExistsError(f"{dest} exists; pass overwrite=True (--overwrite) to replace it")
    if store.n_episodes == 0:
        raise ValueError(f"store {store.path} has no episodes; there is nothing to export")
    if not isinstance(valid_every, int) or valid_every < 2:
        raise ValueError(f"valid_every must be an integer >= 2 (every valid_every-th episode is valid), got {valid_every!r}")
    keys = store.keys
    if action_key not in keys:
        raise KeyError(f"store {store.path} has no action key {action_key!r}; it has {keys} (pass action_key=...)")
    extra = {k: p for k, p in (store.attrs.get("extra_datasets") or {}).items() if k in keys and k != action_key}
    special = {"action", action_key, "reward", "done", "sim_state", *extra}
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
    read = [action_key, *obs_keys, *(k for k in ("reward", "done", "sim_state") if k in keys), *extra,
            *(NEXT_OBS_PREFIX + k for k in obs_keys if NEXT_OBS_PREFIX + k in keys)]

    with building(dest, overwrite=overwrite, owned=_is_hdf5_file, kind="HDF5 file") as tmp, \
            h5py.File(tmp, "w") as file:
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
            for key, path in extra.items():
                group.create_dataset(path, data=ep[key])
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


__all__ = ["import_robomimic", "export_robomimic", "pack_array", "unpack_array", "store_key", "RENAMED", "NEXT_OBS_PREFIX"]
