"""`robolearn convert SRC DST`: import a diffusion_policy zarr or a robomimic HDF5 file into an EpisodeStore, or
export a store (--to). The importers and exporters (robolearn.data.formats) refuse overlapping paths and build
their outputs under temporary names; their refusals reach the terminal as one line."""
from __future__ import annotations

import argparse
from pathlib import Path

from robolearn.commands.arguments import positive_float

FORMATS = ("diffusion_policy", "robomimic")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="import a dataset into an EpisodeStore, or export one",
                       description="Import a dataset into an EpisodeStore (default), or export one (--to).")
    p.add_argument("src", type=Path, help="the dataset to import, or with --to the EpisodeStore to export")
    p.add_argument("dst", type=Path, help="the EpisodeStore to create, or with --to the file to write")
    direction = p.add_mutually_exclusive_group()
    direction.add_argument("--from", dest="from_", choices=FORMATS,
                           help="format of SRC, imported into the EpisodeStore DST (default: robomimic for .hdf5/.h5 "
                                "files, else diffusion_policy)")
    direction.add_argument("--to", choices=FORMATS, help="export the EpisodeStore SRC to this format")
    p.add_argument("--task", help="task name recorded in the store")
    p.add_argument("--fps", type=positive_float, help="control rate recorded in the store")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    from robolearn.data.formats.diffusion_policy import export_diffusion_policy, import_diffusion_policy
    from robolearn.data.formats.robomimic import export_robomimic, import_robomimic
    from robolearn.data.store import EpisodeStore

    if args.to is not None:
        if args.task is not None or args.fps is not None:
            raise ValueError("--task and --fps describe an import; an export keeps the store's own")
        export = {"diffusion_policy": export_diffusion_policy, "robomimic": export_robomimic}[args.to]
        out = export(EpisodeStore.open(args.src), args.dst, overwrite=args.overwrite)
        print(f"wrote {args.to} file {out}")
        return 0
    # robomimic datasets are HDF5 files; everything else is taken for a diffusion_policy zarr
    source_format = args.from_ or ("robomimic" if args.src.suffix in (".hdf5", ".h5") else "diffusion_policy")
    importer = {"diffusion_policy": import_diffusion_policy, "robomimic": import_robomimic}[source_format]
    print(importer(args.src, args.dst, task=args.task, fps=args.fps, overwrite=args.overwrite))
    return 0
