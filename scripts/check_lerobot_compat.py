"""Compatibility with LeRobot itself, both ways, on the shared Push-T demonstrations (not a test: needs LeRobot).

    .venv/bin/python scripts/check_lerobot_compat.py --peer-python /tmp/lerobot-venv/bin/python

1. ours -> LeRobot: import the diffusion_policy zarr into an EpisodeStore, export it with export_lerobot
   (state -> observation.state, img -> observation.image, AV1), then LeRobot 0.4.4's own `LeRobotDataset(repo_id,
   root=folder, video_backend="pyav")` loads it in its own venv and every item is read (`ds[i]` for all i); every
   numeric value must equal the store's, the bookkeeping columns (episode_index, frame_index, timestamp, index,
   task) must be what LeRobot expects, and every decoded frame is compared with the store's (PSNR).
2. LeRobot -> ours: LeRobot's own writer (`LeRobotDataset.create` + `add_frame` + `save_episode` + `finalize`)
   writes the same episodes; import_lerobot reads that folder back; numbers must be exact, frames within codec error.

The peer venv (throw-away, never a project dependency):
    python3.11 -m venv /tmp/lerobot-venv && /tmp/lerobot-venv/bin/pip install lerobot==0.4.4 torch==2.9.1 torchvision==0.24.1
The same file runs inside it (`--peer-read`, `--peer-write`); those modes import only LeRobot and numpy.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RENAME = {"state": "observation.state", "img": "observation.image"}
NUMERIC = ["observation.state", "action", "keypoint", "n_contacts"]


# ------------------------------------------------------------------------------------------- inside LeRobot's venv
def peer_read(folder: str, out: str) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("local/pusht", root=folder, video_backend="pyav")
    n = len(ds)
    got: dict[str, list] = {}
    t0 = time.perf_counter()
    for i in range(n):
        item = ds[i]
        for key, value in item.items():
            if key == "observation.image":  # float32 C,H,W in [0, 1] = uint8 / 255
                value = (value.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            elif hasattr(value, "numpy"):
                value = value.numpy()
            got.setdefault(key, []).append(value)
    seconds = time.perf_counter() - t0
    arrays = {k: np.stack(v) if k != "task" else np.array(v) for k, v in got.items()}
    np.savez(out, **arrays, _meta=np.array(json.dumps({
        "len": n, "num_episodes": ds.num_episodes, "fps": ds.fps, "features": list(ds.features),
        "video_keys": list(ds.meta.video_keys), "codebase_version": ds.meta.info["codebase_version"],
        "items_per_s": n / seconds, "seconds": seconds})))


def peer_write(source: str, folder: str) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    data = dict(np.load(source))  # NpzFile would decompress a whole array at every access
    ends = data["episode_ends"]
    features = {"observation.state": {"dtype": "float32", "shape": (5,), "names": None},
                "action": {"dtype": "float32", "shape": (2,), "names": None},
                "observation.image": {"dtype": "video", "shape": (96, 96, 3), "names": ["height", "width", "channels"]}}
    t0 = time.perf_counter()
    ds = LeRobotDataset.create("local/pusht_written_by_lerobot", fps=10, features=features, root=folder,
                               use_videos=True)
    begin = 0
    for e, end in enumerate(ends):
        for row in range(begin, end):
            ds.add_frame({"observation.state": data["state"][row], "action": data["action"][row],
                          "observation.image": data["img"][row], "task": f"push the T (episode {e % 3})"})
        ds.save_episode()
        begin = end
    ds.finalize()
    print(json.dumps({"write_seconds": time.perf_counter() - t0}))


# ------------------------------------------------------------------------------------------- in robolearn's venv
def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def frame_report(ours: np.ndarray, theirs: np.ndarray, ends: np.ndarray) -> dict:
    per_episode = [psnr(ours[lo:hi], theirs[lo:hi]) for lo, hi in zip(np.r_[0, ends[:-1]], ends)]
    return {"frames": len(ours), "psnr_db": round(psnr(ours, theirs), 2),
            "worst_episode_psnr_db": round(min(per_episode), 2),
            "one_frame_late_psnr_db": round(psnr(ours[1:], theirs[:-1]), 2),
            "rgb_as_bgr_psnr_db": round(psnr(ours, theirs[..., ::-1]), 2)}


def run_peer(python: str, *args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run([python, __file__, *args], env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"the peer failed ({' '.join(args[:1])}):\n{done.stderr[-4000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-python", default="/tmp/lerobot-venv/bin/python")
    parser.add_argument("--source", default=None, help="pusht_cchi_v7_replay.zarr (default: the shared copy)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/robolearn_lerobot_compat"))
    parser.add_argument("--reverse-episodes", type=int, default=206, help="episodes LeRobot's writer writes")
    parser.add_argument("--only", choices=["forward", "reverse"], help="run one direction")
    parser.add_argument("--peer-read", nargs=2, metavar=("FOLDER", "OUT_NPZ"), help=argparse.SUPPRESS)
    parser.add_argument("--peer-write", nargs=2, metavar=("NPZ", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_read:
        return peer_read(*args.peer_read)
    if args.peer_write:
        return peer_write(*args.peer_write)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from robolearn.data.formats.diffusion_policy import import_diffusion_policy
    from robolearn.data.formats.lerobot_export import export_lerobot
    from robolearn.data.store import EpisodeStore
    from robolearn.paths import dataset_search_dirs

    source = Path(args.source) if args.source else next(
        d / "pusht_cchi_v7_replay.zarr" for d in dataset_search_dirs() if (d / "pusht_cchi_v7_replay.zarr").exists())
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    store_path, export, peer_out = work / "pusht.episodes.zarr", work / "pusht_lerobot", work / "lerobot_items.npz"
    store = EpisodeStore.open(store_path) if store_path.exists() else import_diffusion_policy(
        source, store_path, task="pusht", fps=10, progress=False)
    result: dict = {"source": str(source)}

    # 1. LeRobot reads our export
    if args.only != "reverse":
        t0 = time.perf_counter()
        export_lerobot(store, export, rename=RENAME, overwrite=True, progress=False)
        result["export_seconds"] = round(time.perf_counter() - t0, 1)
        forward(args, store, export, peer_out, result)
    ends = store.episode_ends
    lengths = np.diff(np.r_[0, ends])
    if args.only == "forward":
        return finish(work, result)

    # 2. we read what LeRobot's own writer wrote
    reverse_check(args, store, work, ends, lengths, result)
    finish(work, result)


def forward(args, store, export: Path, peer_out: Path, result: dict) -> None:
    run_peer(args.peer_python, "--peer-read", str(export), str(peer_out))
    got = np.load(peer_out)
    meta = json.loads(str(got["_meta"]))
    ends = store.episode_ends
    n = store.n_steps
    lengths = np.diff(np.r_[0, ends])
    checks = {"len": meta["len"] == n, "num_episodes": meta["num_episodes"] == store.n_episodes,
              "episode_index": np.array_equal(got["episode_index"], np.repeat(np.arange(len(ends)), lengths)),
              "frame_index": np.array_equal(got["frame_index"], np.concatenate([np.arange(k) for k in lengths])),
              "index": np.array_equal(got["index"], np.arange(n)),
              "timestamp": np.array_equal(got["timestamp"],
                                          (np.concatenate([np.arange(k) for k in lengths]) / 10).astype(np.float32)),
              "task": bool(np.all(got["task"] == "pusht"))}
    stored = {RENAME.get(k, k): store.read(k) for k in ("state", "action", "keypoint", "n_contacts")}
    values = 0
    for name in NUMERIC:
        ours, theirs = stored[name], got[name]
        checks[name] = ours.dtype == theirs.dtype and np.array_equal(ours.reshape(n, -1), theirs.reshape(n, -1))
        values += ours.size
    result["lerobot_reads_our_export"] = {
        "lerobot": meta, "checks": checks, "numeric_values_compared": values,
        "frames": frame_report(store.read("img"), got["observation.image"], ends)}
    print(json.dumps(result["lerobot_reads_our_export"], indent=1), flush=True)


def reverse_check(args, store, work: Path, ends: np.ndarray, lengths: np.ndarray, result: dict) -> None:
    from robolearn.data.formats.lerobot import import_lerobot

    k = min(args.reverse_episodes, store.n_episodes)
    stop = int(ends[k - 1])
    sub = work / "first_episodes.npz"
    np.savez(sub, state=store.read("state", 0, stop), action=store.read("action", 0, stop),
             img=store.read("img", 0, stop), episode_ends=ends[:k])
    written = work / "written_by_lerobot"
    if written.exists():
        import shutil
        shutil.rmtree(written)
    wrote = json.loads(run_peer(args.peer_python, "--peer-write", str(sub), str(written)).strip().splitlines()[-1])
    back_path = work / "written_by_lerobot.episodes.zarr"
    t0 = time.perf_counter()
    back = import_lerobot(written, back_path, overwrite=True, progress=False)
    import_seconds = time.perf_counter() - t0
    info = json.loads((written / "meta" / "info.json").read_text())
    reverse = {"episodes": k, "frames": stop, "lerobot_write_seconds": round(wrote["write_seconds"], 1),
               "our_import_seconds": round(import_seconds, 1),
               "codec": info["features"]["observation.image"]["info"]["video.codec"],
               "checks": {"episode_lengths": list(back.episode_lengths) == list(lengths[:k]),
                          "fps": back.fps == 10.0,
                          "tasks": [back.episode_meta(e)["task"] for e in range(k)] ==
                                   [f"push the T (episode {e % 3})" for e in range(k)]}}
    for ours, theirs in (("state", "observation.state"), ("action", "action")):
        reverse["checks"][theirs] = np.array_equal(store.read(ours, 0, stop), back.read(theirs))
    reverse["frames"] = frame_report(store.read("img", 0, stop), back.read("observation.image"), ends[:k])
    result["we_read_lerobots_writer"] = reverse
    print(json.dumps(reverse, indent=1))


def finish(work: Path, result: dict) -> None:
    saved = work / "result.json"
    if saved.exists():  # a run of one direction keeps the other's result
        result = {**json.loads(saved.read_text()), **result}
    saved.write_text(json.dumps(result, indent=1))
    ok = all(all(result[k]["checks"].values()) for k in ("lerobot_reads_our_export", "we_read_lerobots_writer")
             if k in result)
    print("ALL CHECKS PASS" if ok else "SOME CHECK FAILED", f"(results in {work / 'result.json'})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
