"""Data loading: windows/s of robolearn's Windows (RAM cache, disk) vs LeRobot 0.4.4 and Diffusion Policy, on Push-T.

    OMP_NUM_THREADS=1 .venv/bin/robolearn bench loading [--seconds 10] [--peer-python /tmp/lerobot-venv/bin/python]

Same data for everyone: the shared Push-T demonstrations (206 episodes, 25,650 steps), imported once into an
EpisodeStore and exported once to LeRobot v3.0 (AV1 video, as LeRobot records) under --work. Two window kinds:
(a) low-dim: 2 observations of the 5-D state + 16 actions, batch 256; (b) image: 2 frames of 96x96 RGB + the
agent position (state[0:2]) + 16 actions, batch 64. Shuffled windows, one process, one thread, no workers:
- robolearn `Windows.gather` + `to_tensors`: uint8 frames, float32 numbers, torch tensors; normalisation is in
  the policy, images become floats on the training device. From RAM (cache="ram"), from disk (cache="disk":
  camera frames from the per-frame LZ4 frame file, its pages dropped from the OS cache before the run; low-dim
  from the store's zarr chunks, cache="none"), and the store's zarr chunks for images (cache="none").
  A row "+ float CHW" also converts the frames to float32 (C, H, W) / 255 on the CPU, as the peers return them.
- LeRobot 0.4.4 `LeRobotDataset(root=..., delta_timestamps=..., video_backend="pyav")` in a torch DataLoader
  (default collate, num_workers=0), in its own venv (subprocess): parquet rows through HF datasets and every
  frame decoded from the mp4 at each access; float32 (C, H, W) frames in [0, 1], no normalisation. Low-dim
  windows from a LeRobot export without the camera (LeRobot decodes every video key of an item).
- Diffusion Policy's SequenceSampler pattern, re-implemented here (not DP's code; marked "DP pattern"): its
  ReplayBuffer in RAM (numpy, images float32 0..255 as in the zarr), per-window slicing of all `horizon` (16)
  steps of every key with edge padding, then PushTImageDataset's conversion (agent_pos = state[:, :2], image
  moved to (C, H, W) and / 255) and torch.from_numpy, in a DataLoader (default collate, num_workers=0).
Also the import time and the on-disk size of each form against the source zarr. Prints a Markdown table and
writes JSON (--out). The peer venv: see scripts/check_lerobot_compat.py.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_OBS, HORIZON, N_ACTION = 2, 16, 8  # DP's Push-T settings: pad n_obs-1 before, n_action-1 after
FPS = 10
KINDS = {"lowdim": 256, "image": 64}


# ------------------------------------------------------------------------------------------ LeRobot (its own venv)
def peer_bench(folder: str, kind: str, batch: int, seconds: float) -> None:
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    torch.set_num_threads(1)
    obs = [(i - N_OBS + 1) / FPS for i in range(N_OBS)]
    deltas = {"observation.state": obs, "action": [(i - N_OBS + 1) / FPS for i in range(HORIZON)]}
    if kind == "image":
        deltas["observation.image"] = obs
    ds = LeRobotDataset("local/pusht", root=folder, delta_timestamps=deltas, video_backend="pyav")
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=0,
                                         generator=torch.Generator().manual_seed(0))
    shapes, n = {}, 0
    t0 = time.perf_counter()
    for b in loader:
        n += len(b["action"])
        shapes = shapes or {k: [list(v.shape), str(v.dtype)] for k, v in b.items() if hasattr(v, "shape")}
        if time.perf_counter() - t0 > seconds:
            break
    print(json.dumps({"windows_per_s": n / (time.perf_counter() - t0), "windows": n, "shapes": shapes}))


# ------------------------------------------------------------------------------------------ DP pattern (re-written)
class SequencePattern:
    """Diffusion Policy's SequenceSampler + PushT dataset pattern, re-implemented: per window, slice `horizon`
    steps of every key out of in-RAM arrays, pad past the episode edges with the edge value, then convert."""

    def __init__(self, arrays: dict[str, np.ndarray], episode_ends: np.ndarray, horizon: int, pad_before: int,
                 pad_after: int, image: bool):
        self.arrays, self.horizon, self.image = arrays, horizon, image
        rows = []
        begin = 0
        for end in episode_ends:
            length = end - begin
            for s in range(-pad_before, length - horizon + pad_after + 1):
                lo, hi = max(s, 0), min(s + horizon, length)
                rows.append((begin + lo, begin + hi, lo - s, horizon - (s + horizon - hi)))
            begin = end
        self.index = np.array(rows, np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        import torch

        first, last, into_first, into_last = self.index[i]
        sample = {}
        for key, arr in self.arrays.items():
            piece = arr[first:last]
            if into_first > 0 or into_last < self.horizon:
                full = np.empty((self.horizon, *arr.shape[1:]), arr.dtype)
                full[:into_first] = piece[0]
                full[into_last:] = piece[-1]
                full[into_first:into_last] = piece
                piece = full
            sample[key] = piece
        if self.image:
            data = {"obs": {"image": np.moveaxis(sample["img"], -1, 1) / 255,
                            "agent_pos": sample["state"][:, :2].astype(np.float32)},
                    "action": sample["action"].astype(np.float32)}
        else:
            data = {"obs": {"state": sample["state"].astype(np.float32)}, "action": sample["action"].astype(np.float32)}
        return {"obs": {k: torch.from_numpy(v) for k, v in data["obs"].items()}, "action": torch.from_numpy(data["action"])}


def dp_rate(source: Path, kind: str, seconds: float) -> dict:
    import torch
    import zarr

    root = zarr.open_group(str(source), mode="r")
    keys = ["state", "action"] + (["img"] if kind == "image" else [])
    arrays = {k: root["data"][k][:] for k in keys}  # ReplayBuffer.copy_from_path: numpy in RAM
    dataset = SequencePattern(arrays, root["meta"]["episode_ends"][:], HORIZON, N_OBS - 1, N_ACTION - 1,
                              kind == "image")
    loader = torch.utils.data.DataLoader(dataset, batch_size=KINDS[kind], shuffle=True, num_workers=0,
                                         generator=torch.Generator().manual_seed(0))
    return _timed(loader, seconds, dtype=str(arrays["img"].dtype) if kind == "image" else "float32")


# ------------------------------------------------------------------------------------------ robolearn
def ours_rate(windows, kind: str, seconds: float, float_chw: bool = False) -> dict:
    import torch

    from robolearn.data.windows import to_tensors

    batch = KINDS[kind]

    def batches():
        rng = np.random.default_rng(0)
        while True:
            order = rng.permutation(len(windows))
            for i in range(0, len(order) - batch + 1, batch):
                out = to_tensors(windows.gather(order[i:i + batch]))
                if float_chw:
                    out["obs"]["image"] = out["obs"]["image"].permute(0, 1, 4, 2, 3).to(torch.float32) / 255
                yield out
    return _timed(batches(), seconds)


def _timed(batches, seconds: float, **extra) -> dict:
    n = 0
    shapes = {}
    t0 = time.perf_counter()
    for b in batches:
        n += len(b["action"])
        shapes = shapes or {k: [list(v.shape), str(v.dtype)] for k, v in {**b["obs"], "action": b["action"]}.items()}
        if time.perf_counter() - t0 > seconds:
            break
    return {"windows_per_s": n / (time.perf_counter() - t0), "windows": n, "shapes": shapes, **extra}


def drop_page_cache(*paths: Path) -> None:
    """Evict these files' pages from the OS cache (posix_fadvise DONTNEED), so a run starts from the disk."""
    for root in paths:
        for f in ([root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]):
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def prepare(source: Path, work: Path, reuse: bool) -> tuple[dict, dict]:
    from robolearn.data.formats.diffusion_policy import import_diffusion_policy
    from robolearn.data.formats.lerobot import import_lerobot
    from robolearn.data.formats.lerobot_export import export_lerobot
    from robolearn.data.frame_file import FrameFile
    from robolearn.data.store import EpisodeStore

    if work.exists() and not reuse:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    p = {"store": work / "pusht.episodes.zarr", "lowdim": work / "pusht_lowdim.episodes.zarr",
         "lerobot": work / "pusht_lerobot", "lerobot_lowdim": work / "pusht_lowdim_lerobot",
         "back": work / "pusht_lerobot.episodes.zarr"}
    times = {}
    if not p["store"].exists():
        t0 = time.perf_counter()
        import_diffusion_policy(source, p["store"], task="pusht", fps=FPS, progress=False)
        times["import diffusion_policy zarr -> store"] = time.perf_counter() - t0
    store = EpisodeStore.open(p["store"])
    if not p["lowdim"].exists():
        with EpisodeStore.build(p["lowdim"], fps=FPS, task="pusht") as low:
            for e in range(store.n_episodes):
                low.append_episode(store.episode(e, ["state", "action"]))
    rename = {"state": "observation.state", "img": "observation.image"}
    for key, src in (("lerobot", p["store"]), ("lerobot_lowdim", p["lowdim"])):
        if not p[key].exists():
            t0 = time.perf_counter()
            export_lerobot(src, p[key], rename=rename if key == "lerobot" else {"state": "observation.state"},
                           progress=False)
            times[f"export store -> LeRobot v3.0 ({'with' if key == 'lerobot' else 'without'} camera)"] = \
                time.perf_counter() - t0
    if not p["back"].exists():
        t0 = time.perf_counter()
        import_lerobot(p["lerobot"], p["back"], progress=False)
        times["import LeRobot v3.0 -> store"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    frames = FrameFile(store, "img")
    times["frame file for img (cache=disk, built on first use)"] = time.perf_counter() - t0
    sizes = {"source diffusion_policy zarr (zarr v2, blosc; images float32)": du(source),
             "EpisodeStore (zarr v3, zstd; images uint8)": du(p["store"]),
             "+ frame file for img (LZ4 per frame)": du(frames.path),
             "LeRobot v3.0 export (parquet + AV1 mp4)": du(p["lerobot"]),
             "EpisodeStore imported back from the LeRobot export": du(p["back"])}
    return p, {"seconds": times, "bytes": sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, help="pusht_cchi_v7_replay.zarr (default: the dataset locations)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/robolearn_bench_loading"))
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--peer-python", default="/tmp/lerobot-venv/bin/python", help="LeRobot 0.4.4's venv")
    parser.add_argument("--skip", nargs="*", default=[], choices=["lerobot", "dp"])
    parser.add_argument("--reuse", action="store_true", help="keep what --work holds (else rebuilt and timed)")
    parser.add_argument("--out", type=Path, help="JSON results (default: <work>/bench_loading.json)")
    parser.add_argument("--peer-bench", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_bench:
        folder, kind, batch, seconds = args.peer_bench
        return peer_bench(folder, kind, int(batch), float(seconds))

    import torch

    from robolearn.data.store import EpisodeStore
    from robolearn.data.windows import Windows, WindowSpec
    from robolearn.paths import dataset_search_dirs

    torch.set_num_threads(1)
    source = args.source or next((d / "pusht_cchi_v7_replay.zarr" for d in dataset_search_dirs()
                                  if (d / "pusht_cchi_v7_replay.zarr").exists()), None)
    if source is None:
        sys.exit("pusht_cchi_v7_replay.zarr not found: pass --source")
    paths, disk = prepare(source, args.work, args.reuse)
    store = EpisodeStore.open(paths["store"])
    specs = {"lowdim": (WindowSpec(("state",), N_OBS, HORIZON, N_ACTION), None),
             "image": (WindowSpec(("image", "agent_pos"), N_OBS, HORIZON, N_ACTION), {"image": "img", "agent_pos": "state[0:2]"})}
    rows = []

    def add(kind, loader, where, result):
        result.update(kind=kind, loader=loader, where=where, load=load())
        rows.append(result)
        print(f"  {kind:7s} {loader:42s} {where:34s} {result['windows_per_s']:12,.0f} windows/s  ({result['load']})",
              flush=True)

    for kind, (spec, sources) in specs.items():
        add(kind, "robolearn Windows", "RAM cache", ours_rate(Windows(store, spec, cache="ram", obs_sources=sources),
                                                             kind, args.seconds))
        if kind == "image":
            add(kind, "robolearn Windows + float CHW / 255 on CPU", "RAM cache",
                ours_rate(Windows(store, spec, cache="ram", obs_sources=sources), kind, args.seconds, float_chw=True))
            windows = Windows(store, spec, cache="disk", obs_sources=sources)
            drop_page_cache(windows._disk["img"].path)
            add(kind, "robolearn Windows", "disk: frame file (LZ4 per frame)", ours_rate(windows, kind, args.seconds))
        drop_page_cache(store.path)
        add(kind, "robolearn Windows", "disk: store zarr chunks (cache=none)",
            ours_rate(Windows(store, spec, cache="none", obs_sources=sources), kind, args.seconds))
        if "lerobot" not in args.skip:
            folder = paths["lerobot" if kind == "image" else "lerobot_lowdim"]
            drop_page_cache(folder)
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
            done = subprocess.run([args.peer_python, __file__, "--peer-bench", str(folder), kind, str(KINDS[kind]),
                                   str(args.seconds)], env=env, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"LeRobot run failed:\n{done.stderr[-3000:]}")
            add(kind, "LeRobot 0.4.4 LeRobotDataset (pyav)", "disk: parquet + mp4 (its only mode)",
                json.loads(done.stdout.strip().splitlines()[-1]))
        if "dp" not in args.skip:
            add(kind, "DP pattern (SequenceSampler, re-implemented)", "RAM (ReplayBuffer numpy)",
                dp_rate(source, kind, args.seconds))

    out = args.out or args.work / "bench_loading.json"
    out.write_text(json.dumps({"rows": rows, "disk": disk, "cpus": os.cpu_count()}, indent=1))
    print("\n| windows | loader | reads from | windows/s | vs LeRobot | vs DP pattern |\n|---|---|---|---|---|---|")
    for r in rows:
        peers = {p: next((x["windows_per_s"] for x in rows if x["kind"] == r["kind"] and x["loader"].startswith(p)),
                         None) for p in ("LeRobot", "DP")}
        ratio = ["" if not v or r["loader"].startswith(p) else f"{r['windows_per_s'] / v:,.1f}x"
                 for p, v in peers.items()]
        print(f"| {r['kind']} | {r['loader']} | {r['where']} | {r['windows_per_s']:,.0f} | {ratio[0]} | {ratio[1]} |")
    print("\n| data | on disk |\n|---|---|")
    for name, size in disk["bytes"].items():
        print(f"| {name} | {size / 1e6:,.1f} MB |")
    if disk["seconds"]:
        print("\n| step | seconds |\n|---|---|")
        for name, s in disk["seconds"].items():
            print(f"| {name} | {s:,.1f} |")
    print(f"\n(one process, torch threads 1; {load()} at the end on {os.cpu_count()} CPUs; JSON: {out})")


if __name__ == "__main__":
    main()
