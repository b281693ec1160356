"""`robolearn convert SRC DST`: import a diffusion_policy zarr, a robomimic HDF5 file or a LeRobot dataset (a
folder with meta/info.json, or a Hub repo id such as lerobot/pusht) into an EpisodeStore, or export a store (--to).
The importers and exporters (robolearn.data.formats) refuse overlapping paths and build their outputs under
temporary names; their refusals reach the terminal as one line."""
from __future__ import annotations

import argparse
from pathlib import Path

from robolearn.commands.arguments import positive_float

FORMATS = ("diffusion_policy", "robomimic", "lerobot")
VIDEO_CODECS = ("av1", "h264", "hevc")  # robolearn.data.formats.lerobot_video.ENCODERS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="import a dataset into an EpisodeStore, or export one",
                       description="Import a dataset into an EpisodeStore (default), or export one (--to).")
    p.add_argument("src", help="the dataset to import (a path, or a LeRobot Hub repo id such as lerobot/pusht), or "
                               "with --to the EpisodeStore to export")
    p.add_argument("dst", type=Path, help="the EpisodeStore to create, or with --to the file or folder to write")
    direction = p.add_mutually_exclusive_group()
    direction.add_argument("--from", dest="from_", choices=FORMATS,
                           help="format of SRC, imported into the EpisodeStore DST (default: lerobot for a folder with "
                                "meta/info.json or a repo id, robomimic for .hdf5/.h5 files, else diffusion_policy)")
    direction.add_argument("--to", choices=FORMATS, help="export the EpisodeStore SRC to this format")
    p.add_argument("--task", help="task name recorded in the store")
    p.add_argument("--fps", type=positive_float, help="control rate recorded in the store")
    p.add_argument("--revision", help="LeRobot Hub datasets: the branch, tag or commit to download (default: main)")
    p.add_argument("--video-codec", choices=VIDEO_CODECS,
                   help="--to lerobot: codec of the camera videos (default: av1, as LeRobot writes)")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    from robolearn.data.store import EpisodeStore

    if args.video_codec is not None and args.to != "lerobot":
        raise ValueError("--video-codec applies to an export to LeRobot (--to lerobot)")
    if args.to is not None:
        if args.task is not None or args.fps is not None:
            raise ValueError("--task and --fps describe an import; an export keeps the store's own")
        if args.revision is not None:
            raise ValueError("--revision names the Hub revision of a LeRobot dataset to import; an export has none")
        out = _export(args.to)(EpisodeStore.open(args.src), args.dst, overwrite=args.overwrite,
                               **({"video_codec": args.video_codec} if args.to == "lerobot" else {}))
        print(f"wrote {args.to} {'dataset' if args.to == 'lerobot' else 'file'} {out}")
        return 0
    source_format = args.from_ or _detect(args.src)
    if source_format == "lerobot":
        return _import_lerobot(args)
    if args.revision is not None:
        raise ValueError("--revision applies to LeRobot datasets from the Hugging Face Hub")
    from robolearn.data.formats.diffusion_policy import import_diffusion_policy
    from robolearn.data.formats.robomimic import import_robomimic

    importer = {"diffusion_policy": import_diffusion_policy, "robomimic": import_robomimic}[source_format]
    print(importer(Path(args.src), args.dst, task=args.task, fps=args.fps, overwrite=args.overwrite))
    return 0


def _detect(src: str) -> str:
    from robolearn.data.formats.lerobot_meta import is_lerobot_dataset
    from robolearn.data.hub import parse_repo_ref

    path = Path(src)
    if is_lerobot_dataset(path) or parse_repo_ref(src) is not None:
        return "lerobot"
    # robomimic datasets are HDF5 files; everything else is taken for a diffusion_policy zarr
    return "robomimic" if path.suffix in (".hdf5", ".h5") else "diffusion_policy"


def _export(fmt: str):
    if fmt == "lerobot":
        from robolearn.data.formats.lerobot_export import export_lerobot

        return export_lerobot
    from robolearn.data.formats.diffusion_policy import export_diffusion_policy
    from robolearn.data.formats.robomimic import export_robomimic

    return {"diffusion_policy": export_diffusion_policy, "robomimic": export_robomimic}[fmt]


def _import_lerobot(args: argparse.Namespace) -> int:
    from robolearn.data.formats.lerobot import import_lerobot
    from robolearn.data.hub import download_lerobot, parse_repo_ref

    if args.fps is not None:
        raise ValueError("--fps: a LeRobot dataset carries its own fps (meta/info.json)")
    source, origin = Path(args.src), None
    ref = parse_repo_ref(args.src)
    if ref is not None:
        repo_id, revision = ref
        if args.revision is not None and revision is not None and args.revision != revision:
            raise ValueError(f"{args.src} names revision {revision} and --revision says {args.revision}; give one")
        source, origin = download_lerobot(repo_id, args.revision or revision)
    elif args.revision is not None:
        raise ValueError(f"--revision applies to a Hub repo id, and {args.src} is a local path")
    print(import_lerobot(source, args.dst, task=args.task, overwrite=args.overwrite, origin=origin))
    return 0
