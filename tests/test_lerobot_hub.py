"""LeRobot datasets by Hub repo id, without the network: a fake snapshot_download serves a local folder the way the
Hub cache lays it out (only the files matching allow_patterns, in snapshots/<commit>/); the real one, offline,
gives the one-line "unreachable" error. Also dataset_path= in training: a repo id or a LeRobot folder is imported
once under datasets/ and reused."""
from __future__ import annotations

import fnmatch
import shutil
import types

import huggingface_hub
import numpy as np
import pytest

from robolearn import paths
from robolearn.cli import main
from robolearn.data import hub, sources
from robolearn.data.store import EpisodeStore
from robolearn.task import TaskConfig
from tests.lerobot_fixtures import CAM, HAND_LENGTHS, write_handmade_v3

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _not_found(kind, what):
    """The Hub client's 404 error (its HTTP library differs between huggingface_hub versions: a stand-in reply)."""
    response = types.SimpleNamespace(status_code=404, headers={}, request=None, url=f"/api/datasets/{what}")
    return kind(f"404 Client Error: {what}", response=response)


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    root = write_handmade_v3(tmp_path_factory.mktemp("hub") / "so100_pick")
    (root / "README.md").write_text("a dataset card: not needed for training")
    (root / "images").mkdir()
    (root / "images" / "leftover.png").write_bytes(b"not needed")
    return root


@pytest.fixture()
def fake_hub(handmade, tmp_path, monkeypatch):
    calls = []

    def snapshot_download(repo_id, *, repo_type=None, revision=None, allow_patterns=None, cache_dir=None, **_):
        calls.append({"repo_id": repo_id, "repo_type": repo_type, "revision": revision, "patterns": allow_patterns})
        if repo_id != "someone/so100_pick":
            raise _not_found(huggingface_hub.errors.RepositoryNotFoundError, repo_id)
        snapshot = tmp_path / "hf_cache" / "datasets--someone--so100_pick" / "snapshots" / COMMIT
        for path in handmade.rglob("*"):
            name = path.relative_to(handmade).as_posix()
            if path.is_file() and any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, snapshot / name)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


@pytest.fixture()
def isolated(tmp_path, monkeypatch):
    root = tmp_path / "project"
    (root / "datasets").mkdir(parents=True)
    monkeypatch.setattr(paths, "project_root", lambda: root)
    monkeypatch.delenv(paths.DATA_ENV_VAR, raising=False)
    return root / "datasets"


@pytest.mark.parametrize("text, ref", [
    ("lerobot/pusht", ("lerobot/pusht", None)),
    ("lerobot/pusht@v3.0", ("lerobot/pusht", "v3.0")),
    ("lerobot/aloha_sim_insertion_human@" + COMMIT, ("lerobot/aloha_sim_insertion_human", COMMIT)),
    ("pusht", None), ("a/b/c", None), ("/abs/path", None), ("../x/y", None), ("data/pusht.zarr", None),
    ("lerobot/pusht@", None), ("lerobot/pusht@bad rev", None),
])
def test_repo_ids_are_told_from_paths(text, ref, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert hub.parse_repo_ref(text) == ref


def test_an_existing_folder_wins_over_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lerobot" / "pusht").mkdir(parents=True)
    assert hub.parse_repo_ref("lerobot/pusht") is None
    assert hub.parse_repo_ref("lerobot/aloha") is None  # a missing path beside it, not a repo id


def test_download_fetches_meta_then_only_needed_files_pinned_to_one_commit(fake_hub):
    root, origin = hub.download_lerobot("someone/so100_pick", revision="v3.0")
    assert root.name == COMMIT and origin == {"repo_id": "someone/so100_pick", "revision": "v3.0", "commit": COMMIT}
    assert [c["patterns"] for c in fake_hub] == [["meta/*"], ["meta/*", "data/*", f"videos/{CAM}/*"]]
    assert [c["revision"] for c in fake_hub] == ["v3.0", COMMIT]  # the second step pinned to what the first read
    assert all(c["repo_type"] == "dataset" for c in fake_hub)
    assert not (root / "README.md").exists() and not (root / "images").exists()


def test_unreachable_hub_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # the real client, no network, no cache
    with pytest.raises(ConnectionError) as info:
        hub.download_lerobot("lerobot/pusht", cache_dir=tmp_path / "empty_cache")
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("cannot download dataset lerobot/pusht (revision main): the Hugging Face Hub is unreachable "
                           "and no copy is in the local cache")


def test_unknown_repo_and_revision(fake_hub, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"dataset someone/else \(revision main\): no such dataset on the Hugging"):
        hub.download_lerobot("someone/else")

    def no_revision(repo_id, **kwargs):
        raise _not_found(huggingface_hub.errors.RevisionNotFoundError, repo_id)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_revision)
    with pytest.raises(FileNotFoundError, match=r"dataset a/b \(revision v9\): the dataset has no such revision"):
        hub.download_lerobot("a/b", "v9")


def test_convert_takes_a_repo_id_and_revision(fake_hub, tmp_path, capsys):
    assert main(["convert", "someone/so100_pick", str(tmp_path / "out.zarr"), "--revision", "v3.0"]) == 0
    store = EpisodeStore.open(tmp_path / "out.zarr")
    assert list(store.episode_lengths) == HAND_LENGTHS
    assert store.attrs["lerobot"]["repo_id"] == "someone/so100_pick" and store.attrs["lerobot"]["commit"] == COMMIT
    assert main(["convert", "someone/so100_pick@v3.0", str(tmp_path / "b.zarr"), "--revision", "main"]) == 2
    assert "names revision v3.0 and --revision says main" in capsys.readouterr().err


def test_training_dataset_path_repo_id_imports_once(fake_hub, isolated):
    store = sources.open_task_store(TaskConfig(), "someone/so100_pick@v3.0", progress=False)
    assert store.path == isolated / "someone_so100_pick@v3.0.episodes.zarr"
    assert list(store.episode_lengths) == HAND_LENGTHS and store.task == "pusht"
    calls = len(fake_hub)
    again = sources.open_task_store(TaskConfig(), "someone/so100_pick@v3.0", progress=False)
    assert again.path == store.path and len(fake_hub) == calls  # the import is reused: no second download


def test_training_dataset_path_lerobot_folder_imports_once(handmade, isolated):
    store = sources.open_task_store(TaskConfig(), handmade, progress=False)
    assert store.path == isolated / "so100_pick.episodes.zarr" and store.fps == 10.0
    assert np.array_equal(store.episode(0)["observation.state"][:, 0], np.arange(6, dtype=np.float32))
    assert sources.open_task_store(TaskConfig(), handmade, progress=False).path == store.path
