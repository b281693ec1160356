"""`robolearn bench [NAME ARGS...]`: run scripts/bench_NAME.py with its own arguments, or list the benchmarks."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def benchmarks() -> dict[str, Path]:
    from robolearn.paths import scripts_dir

    return {p.stem.removeprefix("bench_"): p for p in sorted(scripts_dir().glob("bench_*.py"))}


def listing() -> str:
    """One line per benchmark: its name and the first sentence of its docstring."""
    lines = []
    for name, path in benchmarks().items():
        doc = (path.read_text().split('"""')[1:2] or [""])[0].strip().split("\n\n")[0]
        lines.append(f"  {name:<14} {' '.join(doc.split()).split('. ')[0]}")
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark from scripts/ (robolearn bench: the list)",
                       description="Run scripts/bench_NAME.py with its own arguments (each prints a table; "
                                   "robolearn bench NAME --help for its options).",
                       epilog=f"benchmarks:\n{listing()}", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="benchmark name (none: list them)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own arguments")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    import runpy

    found = benchmarks()
    if args.name is None:
        print("robolearn bench NAME [ARGS...]  (each prints a table; NAME --help for its options)")
        print(listing())
        return 0
    if args.name not in found:
        raise ValueError(f"no benchmark {args.name!r}; available: {', '.join(found)}")
    saved = sys.argv
    sys.argv = [str(found[args.name]), *args.args]
    try:
        runpy.run_path(str(found[args.name]), run_name="__main__")
    except SystemExit as done:  # the script's own argparse (--help, a usage error) or exit code
        return done.code if isinstance(done.code, int) else 0 if done.code is None else 1
    finally:
        sys.argv = saved
    return 0
