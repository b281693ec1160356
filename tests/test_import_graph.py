"""The architecture's arrows (DESIGN.md), checked on every import statement, lazy ones inside functions included."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "robolearn"

# a part of the package -> the parts it must never import
FORBIDDEN = {
    "data": ("sim", "hal", "commands", "cli", "config_files", "eval", "train", "models", "control"),
    "policies": ("sim", "hal", "commands", "cli", "config_files", "eval", "train", "models", "control"),
    "control": ("sim", "hal.drivers", "hal.rig", "hal.safety", "commands", "cli", "config_files", "eval", "train",
                "models"),
    "nn": ("sim", "hal", "commands", "cli", "config_files", "eval", "train", "models", "control", "policies"),
    "sim": ("commands", "cli", "config_files", "train", "eval"),
    "hal": ("commands", "cli", "config_files", "train", "eval", "sim"),
    "models": ("commands", "cli", "config_files", "eval", "sim", "hal"),
    "eval": ("commands", "cli", "config_files", "train"),
    "train": ("commands", "cli", "config_files"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        found = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("robolearn"))
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("robolearn"):
                found.add(node.module)
    return graph


def part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_no_forbidden_arrows():
    wrong = []
    for module, targets in imports().items():
        for target in targets:
            for forbidden in FORBIDDEN.get(part(module), ()):
                if target == f"robolearn.{forbidden}" or target.startswith(f"robolearn.{forbidden}."):
                    wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles_between_modules():
    graph = imports()
    graph = {m: {t for t in ts if t in graph and t != m} for m, ts in graph.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    # a package's __init__ re-exporting its own modules is not a cycle a reader trips over
    cycles = [c for c in cycles if not all(step.startswith(c.split(" -> ")[0]) for step in c.split(" -> "))]
    assert not cycles, "\n".join(cycles)
