"""LeRobot datasets on the Hugging Face Hub: a repo id (`lerobot/pusht`, `lerobot/pusht@v3.0`) where a path goes.

`download_lerobot` fetches through huggingface_hub's `snapshot_download` into its cache (so a second use reads
the cache, also offline), in two steps: `meta/` first, then only the files the dataset's features need
(`data/`, and `videos/<key>/` for each video feature), the second step pinned to the commit the first resolved
so metadata and data always come from one revision. What cannot be downloaded is one line naming the repo and
the revision: no network (and no cached copy), no such repo or revision, no access.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")


def parse_repo_ref(text: str | os.PathLike) -> tuple[str, str | None] | None:
    """`owner/name` or `owner/name@revision` -> (repo_id, revision); None for anything else, and for a text that
    reads as a local path: it exists, or its first part is a folder here (`datasets/typo` is a missing path, not
    a repo id)."""
    text = os.fspath(text)
    if Path(text).exists() or Path(text.split("/", 1)[0]).is_dir():
        return None
    repo_id, _, revision = text.partition("@")
    if not _REPO_ID.fullmatch(repo_id) or repo_id.endswith((".zarr", ".hdf5", ".h5", ".zip")) or ".." in repo_id:
        return None
    if "@" in text and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_./-]*", revision):
        return None
    return repo_id, revision or None


def store_name(repo_id: str, revision: str | None = None) -> str:
    """The name its import gets under datasets/: `lerobot_pusht` (`lerobot_pusht@v3.0` for a pinned revision)."""
    name = repo_id.replace("/", "_")
    return f"{name}@{revision.replace('/', '_')}" if revision else name


def download_lerobot(repo_id: str, revision: str | None = None,
                     cache_dir: str | os.PathLike | None = None) -> tuple[Path, dict[str, Any]]:
    """The local folder of the dataset `repo_id` at `revision` (default: the main branch), downloading what is
    missing; and its origin {"repo_id", "revision" (the requested one), "commit" (the one read)}."""
    from robolearn.data.formats.lerobot_meta import CODEBASE_VERSION, read_info

    root = _snapshot(repo_id, revision, ["meta/*"], cache_dir)
    commit = root.name  # snapshot folders are named by commit hash
    info = read_info(root)
    if info["codebase_version"] == CODEBASE_VERSION:
        videos = [f"videos/{k}/*" for k, f in info["features"].items() if f["dtype"] == "video"]
    else:
        videos = ["videos/*"] if any(f["dtype"] == "video" for f in info["features"].values()) else []
    root = _snapshot(repo_id, commit, ["meta/*", "data/*", *videos], cache_dir, shown=revision)
    return root, {"repo_id": repo_id, "revision": revision, "commit": commit}


def _snapshot(repo_id: str, revision: str | None, patterns: list[str], cache_dir: str | os.PathLike | None,
              shown: str | None = None) -> Path:
    from huggingface_hub import errors, snapshot_download

    where = f"dataset {repo_id} (revision {shown or revision or 'main'})"
    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", revision=revision, allow_patterns=patterns,
                                      cache_dir=cache_dir))
    except errors.GatedRepoError as err:
        raise PermissionError(f"{where} is gated on the Hugging Face Hub: accept its terms on its page and log in "
                              f"(hf auth login), then try again ({_first_line(err)})") from err
    except errors.RepositoryNotFoundError as err:
        raise FileNotFoundError(f"{where}: no such dataset on the Hugging Face Hub, or it is private (log in with "
                                f"hf auth login); if you meant a local folder, it does not exist") from err
    except errors.RevisionNotFoundError as err:
        raise FileNotFoundError(f"{where}: the dataset has no such revision (a branch, tag or commit)") from err
    except errors.LocalEntryNotFoundError as err:
        raise ConnectionError(f"cannot download {where}: the Hugging Face Hub is unreachable and no copy is in the "
                              f"local cache ({_first_line(err)}). Connect to the network (or set HF_ENDPOINT to a "
                              f"mirror), or download the dataset elsewhere and pass its folder") from err
    except (errors.HfHubHTTPError, OSError) as err:
        raise ConnectionError(f"cannot download {where} from the Hugging Face Hub: {_first_line(err)}") from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
