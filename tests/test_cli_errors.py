"""Every verb turns a user's mistake into one line `robolearn VERB: error: ...` (exit 2, no traceback): bad paths,
garbage files given as stores or checkpoints, unknown names, bad overrides, negative counts. Bugs keep their
traceback, and `robolearn --debug` shows it for any error."""
import shutil

import pytest

from robolearn.cli import main
from robolearn.policies.checkpoint import save_policy
from robolearn.task import TaskConfig
from tests.helpers import synthetic_pusht_store, tiny_diffusion


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_errors")
    save_policy(tiny_diffusion(), root / "ckpt", task=TaskConfig())
    synthetic_pusht_store(root / "store.zarr", n_episodes=2, length=10)
    (root / "garbage.txt").write_bytes(b"not a store \x00\x01")
    (root / "garbage.hdf5").write_bytes(b"not HDF5 either")
    (root / "bad_zarr").mkdir()
    (root / "bad_zarr" / "zarr.json").write_text("{oops")
    (root / "bad_ckpt").mkdir()
    (root / "bad_ckpt" / "policy.json").write_text("{oops")
    shutil.copytree(root / "ckpt", root / "bad_weights")
    (root / "bad_weights" / "model.safetensors").write_bytes(b"garbage")
    (root / "bad_rig.yaml").write_text("robot: [unclosed")
    return root


def run(argv, capsys):
    """(exit code, stderr) of one command line, whether argparse or the verb refused it."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as done:
        code = done.code
    return code, capsys.readouterr().err


# (command line with {root} for the fixture folder, what the one line must say)
BAD = [
    ("info {root}/nowhere.zarr", "no episode store at {root}/nowhere.zarr"),
    ("info {root}/garbage.txt", "{root}/garbage.txt is not a zarr group"),
    ("info {root}/bad_zarr", "{root}/bad_zarr is not a zarr group"),
    ("eval {root}/nowhere", "no policy checkpoint at {root}/nowhere"),
    ("eval {root}/bad_ckpt", "{root}/bad_ckpt/policy.json is not a robolearn policy checkpoint: not JSON"),
    ("eval {root}/bad_weights", "policy weights file {root}/bad_weights/model.safetensors is damaged"),
    ("eval {root}/ckpt --episodes -1", "argument --episodes: must be >= 1, got -1"),
    ("eval {root}/ckpt --episodes abc", "argument --episodes: expected a whole number, got 'abc'"),
    ("eval {root}/ckpt --n-envs 0", "argument --n-envs: must be >= 1, got 0"),
    ("eval {root}/ckpt --n-workers -1", "argument --n-workers: must be >= 0, got -1"),
    ("eval {root}/ckpt --steer critic=x --k 0", "argument --k: must be >= 1, got 0"),
    ("eval {root}/ckpt --set scheduler=euler", "scheduler must be one of ('ddim', 'ddpm'), got 'euler'"),
    ("eval {root}/ckpt --set nofield=1", "--set expects FIELD=VALUE with a field of DiffusionConfig"),
    ("eval {root}/ckpt --set num_inference_steps=[1,", "--set: cannot read the value of 'num_inference_steps=[1,'"),
    ("eval {root}/ckpt --set num_inference_steps=many", "num_inference_steps must be an integer, got 'many'"),
    ("eval {root}/ckpt --device nonsense", "--device 'nonsense': Expected one of cpu, cuda"),
    ("eval {root}/ckpt --energy-threshold -1", "argument --energy-threshold: must be a finite number > 0, got -1"),
    ("eval {root}/ckpt --energy-threshold 0.1 --execution ensemble",
     "energy_threshold gates receding-horizon decisions; mode is 'ensemble'"),
    ("eval {root}/ckpt --device cuda:99", "--device 'cuda:99': "),
    ("deploy --rig sim_arm {root}/ckpt --device cuda:99", "--device 'cuda:99': "),
    ("train train.device=cuda:99", "train.device='cuda:99': "),
    ("critic train --task particle device=cuda:99", "device='cuda:99': "),
    ("worldmodel train --task particle device=tpu", "device='tpu': "),
    ("eval {root}/ckpt --steer critic={root}/nowhere", "no critic checkpoint at {root}/nowhere"),
    ("eval {root}/ckpt --imagine {root}/nowhere", "no world model checkpoint at {root}/nowhere"),
    ("eval {root}/ckpt --record {root}/garbage.txt", "Not a directory: '{root}/garbage.txt'"),
    ("train train.steps=-1", "train: steps must be >= 0, got -1"),
    ("train train.batch_size=0", "train: batch_size must be >= 1, got 0"),
    ("train train.steps=abc", "run config: train: steps must be an integer, got 'abc'"),
    ("train task=nonexistent", "Could not find 'task/nonexistent'"),
    ("train policy=nope", "Could not find 'policy/nope'"),
    ("train train.steps", "Error parsing override 'train.steps'"),
    ("train train.stepz=3", "Could not override 'train.stepz'"),
    ("demo train.eval_envs=0", "train: eval_envs must be >= 1, got 0"),
    ("critic train --task particle steps=-5", "steps (-5) must be >= 0"),
    ("critic train --task particle batch_size=0", "batch_size (0) >= 1"),
    ("critic train --task nowhere", "cannot load task 'nowhere': no task config 'nowhere'"),
    ("critic train --task particle --dataset {root}/garbage.txt", "{root}/garbage.txt is not a zarr group"),
    ("critic train --policy {root}/bad_ckpt --dataset {root}/store.zarr", "{root}/bad_ckpt/policy.json is not a"),
    ("critic train --task particle hidden=[64,", "robolearn critic train: cannot read the value of 'hidden=[64,'"),
    ("worldmodel train --task particle steps=-5", "steps (-5) must be >= 0"),
    ("worldmodel train --task particle --dataset {root}/bad_zarr", "{root}/bad_zarr is not a zarr group"),
    ("collect --task lift --episodes -1", "argument --episodes: must be >= 1, got -1"),
    ("collect --episodes 2", "one of the arguments --task --rig is required"),
    ("collect --task lift --rig sim_arm", "argument --rig: not allowed with argument --task"),
    ("collect --task lift --expert degraded --failure-prob 1.5", "argument --failure-prob: must be a probability in"),
    ("collect --task no_such_task", "cannot load task 'no_such_task'"),
    ("collect --rig sim_arm --out {root}/x.zarr --expert degraded --seed 0", "--expert, --seed only apply to --task"),
    ("collect --rig sim_arm --episodes 1", "--rig needs --out STORE"),
    ("collect --task lift --teleop keyboard", "--teleop only applies to --rig"),
    ("teleop --rig sim_arm --seconds -1", "argument --seconds: must be a finite number > 0, got -1"),
    ("teleop --rig sim_arm --seconds nan", "argument --seconds: must be a finite number > 0, got nan"),
    ("teleop --rig nowhere_rig", "no rig named 'nowhere_rig'"),
    ("teleop --rig {root}/bad_rig.yaml", "{root}/bad_rig.yaml: not valid YAML"),
    ("teleop --rig sim_arm --teleop joystick", "argument --teleop: invalid choice: 'joystick'"),
    ("replay --rig sim_arm {root}/store.zarr --episode -1", "argument --episode: must be >= 0, got -1"),
    ("replay --rig sim_arm {root}/garbage.txt", "{root}/garbage.txt is not a zarr group"),
    ("deploy --rig sim_arm {root}/ckpt --episodes 0", "argument --episodes: must be >= 1, got 0"),
    ("deploy --rig sim_arm {root}/bad_ckpt", "{root}/bad_ckpt/policy.json is not a robolearn policy checkpoint"),
    ("deploy --rig sim_arm {root}/ckpt --execution fastest", "unknown chunk execution mode 'fastest'"),
    ("convert {root}/garbage.txt {root}/out.zarr", "{root}/garbage.txt is not a zarr group"),
    ("convert {root}/garbage.hdf5 {root}/out.zarr", "{root}/garbage.hdf5 is not an HDF5 file"),
    ("convert {root}/garbage.txt {root}/out.hdf5 --to robomimic", "{root}/garbage.txt is not a zarr group"),
    ("convert {root}/store.zarr {root}/out.zarr --fps -3", "argument --fps: must be a finite number > 0, got -3"),
    ("convert {root}/store.zarr {root}/out.zarr --to diffusion_policy --task lift", "--task and --fps describe an import"),
    ("bench nope", "no benchmark 'nope'; available: "),
    ("nosuchverb", "argument VERB: invalid choice: 'nosuchverb'"),
]


@pytest.mark.parametrize("line, says", BAD, ids=[line.split(" {root}")[0] + f" #{i}" for i, (line, _) in enumerate(BAD)])
def test_a_bad_invocation_is_one_line_naming_the_problem(files, capsys, line, says):
    argv = [part.replace("{root}", str(files)) for part in line.split()]
    code, err = run(argv, capsys)
    lines = err.strip().splitlines()
    verb = " ".join(argv[:2]) if argv[0] in ("critic", "worldmodel") else argv[0]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    prefix = "robolearn: error:" if argv[0] == "nosuchverb" else f"robolearn {verb}: error: "
    assert lines[0].startswith(prefix), lines[0]
    assert says.replace("{root}", str(files)) in lines[0]
    assert not (files / "out.zarr").exists() and not (files / "out.hdf5").exists()  # refused before any output


def test_debug_shows_the_traceback_instead(files, capsys):
    with pytest.raises(FileNotFoundError, match="no episode store"):
        main(["--debug", "info", str(files / "nowhere.zarr")])
    assert capsys.readouterr().err == ""


def test_a_bug_keeps_its_traceback(files, monkeypatch):
    import robolearn.commands.info as info

    def broken(args):
        raise AttributeError("'NoneType' object has no attribute 'episode_ends'")

    monkeypatch.setattr(info, "cmd_info", broken)
    with pytest.raises(AttributeError):
        main(["info", str(files / "store.zarr")])


def test_a_missing_optional_sdk_is_one_line_but_a_missing_robolearn_module_is_a_bug(files, monkeypatch, capsys):
    import robolearn.commands.info as info

    def needs(module):
        def handler(args):
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)
        return handler

    monkeypatch.setattr(info, "cmd_info", needs("pyrealsense2"))
    code, err = run(["info", str(files / "store.zarr")], capsys)
    assert code == 2 and err == "robolearn info: error: No module named 'pyrealsense2'\n"
    monkeypatch.setattr(info, "cmd_info", needs("robolearn.nowhere"))
    with pytest.raises(ModuleNotFoundError):
        main(["info", str(files / "store.zarr")])


def test_a_store_held_open_by_another_writer_is_refused_in_one_line(files, tmp_path, capsys):
    from robolearn.data.store import EpisodeStore

    path = tmp_path / "rollouts.zarr"
    shutil.copytree(files / "store.zarr", path)
    with EpisodeStore.open(path, mode="a"):  # another writer (flock: another open file, as in another process)
        code, err = run(["eval", str(files / "ckpt"), "--episodes", "1", "--record", str(path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"robolearn eval: error: store {path} is being written by")
    assert EpisodeStore.open(path).n_episodes == 2  # nothing was added
