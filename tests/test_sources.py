import hashlib
import http.server
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from robolearn import paths
from robolearn.data import sources
from robolearn.data.store import EpisodeStore
from robolearn.task import TaskConfig


@pytest.fixture()
def isolated(tmp_path, monkeypatch):
    """A project root with empty datasets/ and shared/data/ so the real data is not found by accident."""
    root = tmp_path / "project"
    (root / "datasets").mkdir(parents=True)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    monkeypatch.setattr(paths, "project_root", lambda: root)
    monkeypatch.delenv(paths.DATA_ENV_VAR, raising=False)
    return tmp_path


def _dp_store(path, n_episodes=3, length=12):
    import zarr

    group = zarr.open_group(path, mode="w", zarr_format=2)
    state = np.arange(n_episodes * length * 5, dtype=np.float32).reshape(-1, 5)
    group.require_group("data").create_array("state", shape=state.shape, dtype=state.dtype)[:] = state
    group["data"].create_array("action", shape=(len(state), 2), dtype=np.float32)[:] = state[:, :2]
    ends = group.require_group("meta").create_array("episode_ends", shape=(n_episodes,), dtype=np.int64)
    ends[:] = np.arange(1, n_episodes + 1) * length
    return state


def test_foreign_dataset_in_shared_is_imported_once_and_reused(isolated):
    state = _dp_store(isolated / "shared" / "data" / "pusht_cchi_v7_replay.zarr")
    store = sources.open_task_store(TaskConfig(), progress=False)
    # named after the dataset file, not the task, so every task on this dataset shares the import
    assert store.path == isolated / "project" / "datasets" / "pusht_cchi_v7_replay.episodes.zarr"
    assert np.array_equal(store.read("state"), state) and store.n_episodes == 3 and store.fps == 10
    again = sources.open_task_store(TaskConfig(), progress=False)  # no second import
    assert again.path == store.path and again.n_episodes == 3


def test_environment_variable_folder_is_searched_first(isolated, monkeypatch):
    data = isolated / "mydata"
    EpisodeStore.create(data / "pusht_cchi_v7_replay.zarr").append_episode(
        {"state": np.ones((20, 5), np.float32), "action": np.ones((20, 2), np.float32)})
    monkeypatch.setenv(sources.ENV_VAR, str(data))
    assert sources.open_task_store(TaskConfig(), allow_download=False).n_steps == 20


def test_missing_dataset_says_where_to_put_it(isolated):
    with pytest.raises(FileNotFoundError) as info:
        sources.open_task_store(TaskConfig(), allow_download=False)
    message = str(info.value)
    assert "pusht_cchi_v7_replay.zarr" in message and str(isolated / "shared" / "data") in message
    assert "ROBOLEARN_DATA" in message and "diffusion-policy.cs.columbia.edu" in message
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sources.open_task_store(TaskConfig(), path=isolated / "nope.zarr")


def test_missing_sim_dataset_says_how_to_collect_it(isolated):
    task = TaskConfig(name="lift", dataset="lift_scripted.episodes.zarr", dataset_format="robolearn", dataset_url="",
                      expert="scripted")
    with pytest.raises(FileNotFoundError, match="robolearn collect --task lift --expert scripted"):
        sources.open_task_store(task)
    with pytest.raises(ValueError, match="expert_episodes=5 needs an expert"):
        TaskConfig(expert_episodes=5)


def test_failed_download_is_reported_with_the_reason(isolated):
    task = TaskConfig(dataset_url="http://127.0.0.1:9/pusht.zip")  # port 9 (discard): connection refused
    with pytest.raises(FileNotFoundError, match="Download failed"):
        sources.open_task_store(task)


def test_download_unpacks_into_a_subfolder_and_is_found(isolated, tmp_path):
    served = tmp_path / "served"
    _dp_store(served / "pusht" / "pusht_cchi_v7_replay.zarr")
    shutil.make_archive(str(tmp_path / "www" / "pusht"), "zip", served)
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "www"), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        task = TaskConfig(dataset_url=f"http://127.0.0.1:{server.server_port}/pusht.zip",
                          dataset_sha256=sha256(tmp_path / "www" / "pusht.zip"))
        store = sources.open_task_store(task, progress=False)
    finally:
        server.shutdown()
    assert store.n_episodes == 3


def _forbid_imports(monkeypatch):
    from robolearn.data.formats import diffusion_policy

    def refuse(*args, **kwargs):
        raise AssertionError("the dataset was imported a second time")

    monkeypatch.setattr(diffusion_policy, "import_diffusion_policy", refuse)


def test_state_and_image_tasks_share_one_import(isolated, monkeypatch):
    import yaml

    _dp_store(isolated / "shared" / "data" / "pusht_cchi_v7_replay.zarr")
    image_yaml = Path(__file__).resolve().parents[1] / "configs" / "task" / "pusht_image.yaml"
    image_task = TaskConfig(**yaml.safe_load(image_yaml.read_text()))
    first = sources.open_task_store(TaskConfig(), progress=False)
    _forbid_imports(monkeypatch)
    second = sources.open_task_store(image_task, progress=False)
    assert second.path == first.path and second.n_episodes == 3
    assert sorted(p.name for p in (isolated / "project" / "datasets").iterdir()) == ["pusht_cchi_v7_replay.episodes.zarr"]


# ---------------------------------------------------------------------------------------------- download checks
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def served_zip(tmp_path: Path, members: dict[str, bytes] | None = None) -> Path:
    """A zip to download through a file:// URL: pusht/pusht_cchi_v7_replay.zarr, or the given raw members."""
    import zipfile

    archive = tmp_path / "www" / "pusht.zip"
    archive.parent.mkdir(parents=True, exist_ok=True)
    if members is None:
        _dp_store(tmp_path / "served" / "pusht" / "pusht_cchi_v7_replay.zarr")
        shutil.make_archive(str(archive.with_suffix("")), "zip", tmp_path / "served")
    else:
        with zipfile.ZipFile(archive, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
    return archive


def test_unpinned_download_is_kept_but_not_unpacked(tmp_path):
    archive = served_zip(tmp_path)
    dest = tmp_path / "datasets"
    with pytest.raises(sources.DownloadCheckError) as info:
        sources.download(archive.as_uri(), dest)
    digest = sha256(archive)
    assert str(info.value) == (f"downloaded {archive.as_uri()} to {dest / 'pusht.zip'} but did not unpack it: no "
                               f"SHA-256 is pinned for it (dataset_sha256). Its SHA-256 is {digest}; once you trust "
                               f"this file, pin it with the override dataset_sha256={digest}")
    assert sorted(p.name for p in dest.iterdir()) == ["pusht.zip"]
    # pinned (any case, stray spaces): the kept archive is checked, reused and unpacked
    archive.unlink()  # so the download could not happen again
    assert sources.download(archive.as_uri(), dest, sha256=f" {digest.upper()} ") == dest / "pusht.zip"
    assert (dest / "pusht" / "pusht_cchi_v7_replay.zarr" / "meta").is_dir()
    assert sorted(p.name for p in dest.iterdir()) == ["pusht", "pusht.zip"]


def test_mismatched_download_is_deleted_naming_both_hashes(tmp_path):
    archive = served_zip(tmp_path)
    dest = tmp_path / "datasets"
    wrong = "0" * 64
    with pytest.raises(sources.DownloadCheckError) as info:
        sources.download(archive.as_uri(), dest, sha256=wrong)
    assert f"has SHA-256 {sha256(archive)} but dataset_sha256 pins {wrong}; it was deleted" in str(info.value)
    assert list(dest.iterdir()) == []
    # a stale archive with another hash is downloaded again, not trusted
    (dest / "pusht.zip").write_bytes(b"old")
    sources.download(archive.as_uri(), dest, sha256=sha256(archive))
    assert sha256(dest / "pusht.zip") == sha256(archive) and (dest / "pusht").is_dir()


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/evil.txt", "pusht/../../evil.txt", "C:/evil.txt",
                                    "..\\evil.txt"])
def test_zip_slip_members_are_refused(tmp_path, member):
    archive = served_zip(tmp_path, {"pusht/ok.txt": b"fine", member: b"evil"})
    dest = tmp_path / "deep" / "datasets"
    with pytest.raises(sources.DownloadCheckError, match=rf"holds member {re.escape(repr(member))}, which would be "
                                                         rf"written outside {re.escape(str(dest))}"):
        sources.download(archive.as_uri(), dest, sha256=sha256(archive))
    assert sorted(p.name for p in dest.iterdir()) == ["pusht.zip"]  # nothing unpacked
    assert not (tmp_path / "deep" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_unpacking_never_replaces_existing_entries(tmp_path):
    archive = served_zip(tmp_path, {"pusht/new.txt": b"new"})
    dest = tmp_path / "datasets"
    (dest / "pusht").mkdir(parents=True)
    (dest / "pusht" / "mine.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=f"unpacking .*pusht.zip would replace {re.escape(str(dest / 'pusht'))}"):
        sources.download(archive.as_uri(), dest, sha256=sha256(archive))
    assert [p.name for p in (dest / "pusht").iterdir()] == ["mine.txt"]
    assert sorted(p.name for p in dest.iterdir()) == ["pusht", "pusht.zip"]  # no staging folder left


def test_open_task_store_passes_the_pin(isolated, tmp_path):
    archive = served_zip(tmp_path)
    with pytest.raises(sources.DownloadCheckError, match=f"Its SHA-256 is {sha256(archive)}"):
        sources.open_task_store(TaskConfig(dataset_url=archive.as_uri()), progress=False)
    store = sources.open_task_store(TaskConfig(dataset_url=archive.as_uri(), dataset_sha256=sha256(archive)),
                                    progress=False)
    assert store.n_episodes == 3
