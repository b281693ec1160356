"""The command line's shape: every verb is a commands/ module that registers its own arguments, the help lists
every verb and option, and building the parser (or summarizing a store) stays light: no torch, no import cycle."""
import argparse
import subprocess
import sys

from robolearn.cli import COMMAND_MODULES, build_parser

VERBS = ["demo", "train", "eval", "critic", "worldmodel", "collect", "teleop", "deploy", "replay", "convert", "info",
         "bench"]


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_help_lists_every_verb_and_every_verb_lists_every_option():
    parser = build_parser()
    top = parser.format_help()
    verbs = subparsers(parser)
    assert sorted(verbs) == sorted(VERBS) and "--debug" in top
    assert all(f"    {verb}" in top for verb in VERBS)
    parsers = {verb: p for verb, p in verbs.items() if verb not in ("critic", "worldmodel")}
    parsers.update({f"{verb} train": subparsers(verbs[verb])["train"] for verb in ("critic", "worldmodel")})
    for name, p in parsers.items():
        text = p.format_help()
        assert text.startswith(f"usage: robolearn {name} "), text
        for action in p._actions:
            for option in action.option_strings:
                assert option in text, f"robolearn {name} --help does not show {option}"
    assert {"--task", "--rig", "--teleop", "--expert", "--out"} <= set(parsers["collect"]._option_string_actions)
    assert {"--rig", "--seconds", "--teleop"} <= set(parsers["teleop"]._option_string_actions)
    assert "loop " in parsers["bench"].format_help()  # the benchmarks are listed in its help


def test_every_command_module_registers_itself():
    import importlib

    for name in COMMAND_MODULES:
        module = importlib.import_module(f"robolearn.commands.{name}")
        assert callable(module.register), name


def test_the_choices_named_by_the_parsers_are_the_libraries():
    from robolearn.commands.arguments import EXECUTION_MODES
    from robolearn.commands.collect import EXPERT_KINDS
    from robolearn.control.chunking import MODES
    from robolearn.sim import collect

    assert tuple(EXECUTION_MODES) == tuple(MODES)
    assert EXPERT_KINDS == collect.EXPERT_KINDS


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_help_and_info_do_not_import_torch(tmp_path):
    from tests.helpers import synthetic_pusht_store

    synthetic_pusht_store(tmp_path / "s.zarr", n_episodes=1, length=5)
    out = run_python(
        "import contextlib, io, sys\n"
        "from robolearn.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    for verb in ('eval', 'collect', 'deploy', 'critic'):\n"
        "        try:\n"
        "            main([verb, '--help'])\n"
        "        except SystemExit:\n"
        "            pass\n"
        f"    code = main(['info', {str(tmp_path / 's.zarr')!r}])\n"
        "print(code, 'torch' in sys.modules)\n")
    assert out.split() == ["0", "False"]


def test_the_simulators_never_import_the_command_line():
    """sim/ implements envs and experts; importing the CLI from there (even inside a function) is a cycle."""
    import ast
    from pathlib import Path

    import robolearn.sim

    offenders = []
    for path in Path(robolearn.sim.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.name}: {name}" for name in names
                          if name.startswith(("robolearn.cli", "robolearn.commands", "robolearn.config_files"))]
    assert offenders == []
