"""Finding a task's dataset: a path the user gives, $ROBOLEARN_DATA, ./datasets, ../shared/data, or a download.

Foreign formats are imported once into an EpisodeStore under the datasets folder and reused afterwards; a LeRobot
dataset (a folder with meta/info.json, or a Hub repo id such as lerobot/pusht[@revision]) too. The
import is named after the dataset file, not the task: several tasks train on one dataset (Push-T from state and
from pixels both read pusht_cchi_v7_replay.zarr), and they share one imported copy. Finding data never runs a
simulator: a command that wants missing demonstrations collected passes the collector in (`make_missing`).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from robolearn.data.hub import download_lerobot, parse_repo_ref, store_name
from robolearn.data.store import EpisodeStore, StoreFormatError
from robolearn.paths import DATA_ENV_VAR as ENV_VAR
from robolearn.paths import dataset_search_dirs as search_dirs
from robolearn.paths import datasets_dir
from robolearn.task import TaskConfig

# (task, where to write) -> the store it made: e.g. robolearn.sim.collect.collect_for_task, which runs the task's
# scripted expert. Passed in by the commands that want it, so finding data never depends on a simulator.
MakeDemonstrations = Callable[[TaskConfig, Path], EpisodeStore]


def find_source(task: TaskConfig, path: str | os.PathLike | None = None) -> Path | None:
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"dataset path {path} does not exist")
        return path
    for folder in search_dirs():
        # archives often unpack into a subfolder (pusht.zip holds pusht/pusht_cchi_v7_replay.zarr)
        for candidate in (folder / task.dataset, *sorted(folder.glob(f"*/{task.dataset}"))):
            if candidate.exists():
                return candidate
    return None


def imported_store_path(dataset: str) -> Path:
    """Where the foreign dataset file named `dataset` is imported: datasets/<its stem>.episodes.zarr."""
    return datasets_dir() / f"{Path(dataset).stem}.episodes.zarr"


def find_import(dataset: str) -> Path | None:
    """An existing import of the dataset file named `dataset`, or None."""
    path = imported_store_path(dataset)
    return path if path.exists() else None


class DownloadCheckError(ValueError):
    """A downloaded archive that is not unpacked: its SHA-256 is not the pinned one, or nothing is pinned."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest_dir: Path, timeout: float = 30.0, sha256: str | None = None) -> Path:
    """Download a zip, check it against the pinned SHA-256 (a task's `dataset_sha256`) and unpack it.

    Nothing is unpacked unchecked: a mismatch deletes the download; without a pin the archive is kept, not
    unpacked, and the error gives its hash so the user can pin it once they trust the file. An archive already
    downloaded with the pinned hash is reused. Raises ConnectionError where the download fails."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    archive = dest_dir / Path(urllib.parse.urlparse(url).path).name
    want = (sha256 or "").strip().lower()
    if not (want and archive.is_file() and _sha256(archive) == want):
        tmp = archive.with_name(f".{archive.name}.part-{os.getpid()}")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
        except (urllib.error.URLError, OSError) as err:
            tmp.unlink(missing_ok=True)
            raise ConnectionError(f"could not download {url}: {err}") from err
        got = _sha256(tmp)
        if want and got != want:
            tmp.unlink()
            raise DownloadCheckError(f"the download of {url} has SHA-256 {got} but dataset_sha256 pins {want}; it "
                                     f"was deleted and nothing was unpacked (a damaged or different file: try again, "
                                     f"or check where the pin came from)")
        os.replace(tmp, archive)
        if not want:
            raise DownloadCheckError(f"downloaded {url} to {archive} but did not unpack it: no SHA-256 is pinned for "
                                     f"it (dataset_sha256). Its SHA-256 is {got}; once you trust this file, pin it "
                                     f"with the override dataset_sha256={got}")
    if archive.suffix == ".zip":
        _unpack_zip(archive, dest_dir)
    return archive


def _unpack_zip(archive: Path, dest_dir: Path) -> None:
    """Unpack beside the archive through a staging folder, refusing members that would land outside `dest_dir`
    (absolute paths, `..`: "zip slip") and top-level entries that already exist there."""
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            parts = PurePosixPath(name.replace("\\", "/")).parts
            if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise DownloadCheckError(f"{archive} holds member {name!r}, which would be written outside "
                                         f"{dest_dir} (absolute path or '..'); refusing to unpack it")
        staging = dest_dir / f".{archive.name}.unpacking-{os.getpid()}"
        try:
            zf.extractall(staging)
            entries = sorted(staging.iterdir())
            clash = [dest_dir / e.name for e in entries if (dest_dir / e.name).exists()]
            if clash:
                raise FileExistsError(f"unpacking {archive} would replace {clash[0]}; move it away (or unpack "
                                      f"the archive yourself) and try again")
            for entry in entries:
                os.rename(entry, dest_dir / entry.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def open_task_store(task: TaskConfig, path: str | os.PathLike | None = None, allow_download: bool = True,
                    progress: bool = True, make_missing: MakeDemonstrations | None = None) -> EpisodeStore:
    """The task's demonstrations as an EpisodeStore, importing (and downloading) them when needed.

    When the dataset is found nowhere and the task names an expert, `make_missing(task, path)` makes it."""
    existing = find_import(task.dataset) if path is None else None
    if existing is not None:
        return EpisodeStore.open(existing)
    hub_ref = parse_repo_ref(path) if path is not None else None
    if hub_ref is not None:  # a LeRobot dataset on the Hugging Face Hub, e.g. dataset_path=lerobot/pusht
        return _lerobot_import(task, hub_ref, progress)
    source = find_source(task, path)
    if source is None and path is None and task.expert and task.expert_episodes and make_missing is not None:
        return make_missing(task, datasets_dir() / task.dataset)
    if source is None and allow_download and task.dataset_url:
        try:
            download(task.dataset_url, datasets_dir(), sha256=task.dataset_sha256 or None)
        except ConnectionError as err:
            raise FileNotFoundError(_not_found_message(task, err)) from err
        source = find_source(task)
    if source is None:
        raise FileNotFoundError(_not_found_message(task))
    try:
        return EpisodeStore.open(source)
    except StoreFormatError:
        if (source / "meta" / "info.json").is_file():  # a LeRobot dataset folder (lerobot_meta.is_lerobot_dataset)
            return _lerobot_import(task, source, progress)
        if task.dataset_format != "diffusion_policy":
            raise
    from robolearn.data.formats.diffusion_policy import import_diffusion_policy

    if path is not None:  # a user-given foreign dataset is imported next to the others, named after it
        existing = find_import(source.name)
        if existing is not None:
            return EpisodeStore.open(existing)
    return import_diffusion_policy(source, imported_store_path(source.name), task=task.name,
                                   fps=task.spec().control_hz, progress=progress)


def _lerobot_import(task: TaskConfig, source: Path | tuple[str, str | None], progress: bool) -> EpisodeStore:
    """A LeRobot folder or Hub (repo_id, revision), imported once to datasets/<folder name or owner_name[@rev]>."""
    from robolearn.data.formats.lerobot import import_lerobot

    name = store_name(*source) if isinstance(source, tuple) else source.name
    dest = datasets_dir() / f"{name}.episodes.zarr"
    if dest.exists():
        return EpisodeStore.open(dest)
    origin = None
    if isinstance(source, tuple):
        source, origin = download_lerobot(*source)
    return import_lerobot(source, dest, task=task.name, progress=progress, origin=origin)


def _not_found_message(task: TaskConfig, err: Exception | None = None) -> str:
    places = "\n".join(f"  {d / task.dataset}" for d in search_dirs())
    reason = f"\nDownload failed: {err}" if err else ""
    if task.dataset_url:
        origin = f"Official source: {task.dataset_url}{reason}"
    elif task.expert:
        origin = f"Or make it in simulation: robolearn collect --task {task.name} --expert {task.expert} --episodes 100"
    else:
        origin = "This task has no download source; record demonstrations with `robolearn collect`."
    return (f"dataset {task.dataset!r} for task {task.name!r} not found. Looked in:\n{places}\n"
            f"Put it in one of these places, set ${ENV_VAR} to its folder, or pass its path "
            f"(dataset=/path/to/{task.dataset}). {origin}")
