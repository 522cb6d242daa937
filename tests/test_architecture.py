"""The shape of the package: which module may import which, and what a read-only command loads.

The import rules are read from the source (ast), so a back-edge fails here the day it is
written, not when someone notices that `cutout status` got slow. The loaded modules are
read from a real `cutout` process: torch, transformers and OpenCV take more than a
second to import, and the commands that never run the model must not pay for them.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import daemon

PACKAGE = Path(daemon.__file__).parent
HEAVY = ("torch", "torchvision", "transformers", "cv2")
LIFE_CYCLE = ("daemon.watch.runner", "daemon.work.worker", "daemon.watch.settle", "daemon.work.stages", "daemon.work.batch", "daemon.models.loading")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, modules: set[str]) -> set[str]:
    """Every module `path` imports, at the top or inside a function, typing-only ones included.
    `from package import module` is an edge to the module, not to the package."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            named = {f"{node.module}.{alias.name}" for alias in node.names}
            found.update(named & modules or {node.module})
    return found & modules


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: _imports(path, modules=set(paths)) for name, path in paths.items()}


GRAPH = _graph()


LAYERS = (
    "daemon", "daemon.errors", "daemon.atomic", "daemon.pipeline", "daemon.service", "daemon.folders",
    "daemon.settings", "daemon.logs", "daemon.store", "daemon.models", "daemon.work", "daemon.companions",
    "daemon.watch", "daemon.cli", "daemon.testing", "daemon.__main__",
)
"""Every room of the package (a top-level module or a package), lowest first: a room imports only
rooms before it. ARCHITECTURE.md draws the same order."""


def _room(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_every_module_lives_in_a_room_with_a_place_in_the_layers() -> None:
    assert sorted({_room(module) for module in GRAPH} - set(LAYERS)) == []


def test_a_package_imports_only_from_the_packages_below_it() -> None:
    upward = sorted(
        f"{module} -> {imported}" for module, imports in GRAPH.items() for imported in imports
        if LAYERS.index(_room(imported)) > LAYERS.index(_room(module))
    )
    assert upward == []


def test_the_top_of_the_package_holds_few_modules_and_every_package_says_what_it_owns() -> None:
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= 10, top
    packages = sorted(path.parent for path in PACKAGE.rglob("__init__.py"))
    undocumented = [str(package.relative_to(PACKAGE.parent)) for package in packages
                    if len(ast.get_docstring(ast.parse((package / "__init__.py").read_text("utf-8"))) or "") < 200]
    assert undocumented == []
    missing_rule = [package.name for package in packages
                    if package.parent == PACKAGE and package.name not in ("pipeline", "service")
                    and "May import" not in (package / "__init__.py").read_text("utf-8")]
    assert missing_rule == []


def test_the_pipeline_imports_nothing_from_the_daemon_but_the_error_tree() -> None:
    outside = {
        module: sorted(m for m in imported if not m.startswith("daemon.pipeline") and m != "daemon.errors")
        for module, imported in GRAPH.items() if module.startswith("daemon.pipeline")
    }
    assert {module: found for module, found in outside.items() if found} == {}


def test_no_module_imports_one_that_imports_it_back() -> None:
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in GRAPH[start] - seen:
            seen.add(nxt)
            if nxt == goal or reaches(nxt, goal, seen):
                return True
        return False

    cycles = sorted(
        f"{a} -> {b}" for a, imported in GRAPH.items() for b in imported
        if a != b and not b.startswith(f"{a}.") and reaches(b, a, set())
    )
    assert cycles == []


@pytest.mark.parametrize("module", ["daemon.cli.status", "daemon.store.statedir", "daemon.store.sqlite", "daemon.settings",
                                    "daemon.folders.outputs", "daemon.store.session", "daemon.models.fetch", "daemon.service",
                                    "daemon.companions.dashboard.server", "daemon.companions.alongside", "daemon.companions.alerts", "daemon.companions.monitor"])
def test_what_read_only_commands_use_never_reaches_the_life_cycle_or_the_model(module: str) -> None:
    reached, todo = set(), [module]
    while todo:
        for nxt in GRAPH[todo.pop()] - reached:
            reached.add(nxt)
            todo.append(nxt)
    assert sorted(reached & {*LIFE_CYCLE, "daemon.pipeline.model", "daemon.pipeline.inference"}) == []


def test_a_queue_rebuild_never_reaches_the_watcher_or_watchdog() -> None:
    """`cutout queue rebuild` runs while no daemon does: it needs the layout's rules, not the watcher."""
    reached, todo = set(), ["daemon.store.rebuild"]
    while todo:
        for nxt in GRAPH[todo.pop()] - reached:
            reached.add(nxt)
            todo.append(nxt)
    assert sorted(reached & {*LIFE_CYCLE, "daemon.watch.tick"}) == []


_RUN_AND_LIST_MODULES = """
import json, sys
from daemon.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
tops = {name.split(".")[0] for name in sys.modules}
print(json.dumps({"code": code, "heavy": sorted(tops & set(%r)), "logging": sorted(tops & {"structlog", "rich"}),
                  "life_cycle": sorted(set(sys.modules) & set(%r))}), file=sys.stderr)
""" % (HEAVY, LIFE_CYCLE)


def _loaded_by(*args: str) -> dict[str, object]:
    completed = subprocess.run([sys.executable, "-c", _RUN_AND_LIST_MODULES, *args], capture_output=True, text=True,
                               timeout=60)
    result: dict[str, object] = json.loads(completed.stderr.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("args", [
    ["--help"], ["--version"], ["status", "--state", "{state}"], ["dashboard", "--help"],
    ["retry", "--state", "{state}", "--input", "{state}/in", "--output", "{state}/out", "--all"],
])
def test_commands_that_never_run_the_model_never_import_torch_opencv_the_daemon_or_the_log_renderers(
    tmp_path: Path, args: list[str]
) -> None:
    from daemon.store.sqlite import JobQueue

    JobQueue(tmp_path / "queue.sqlite3").close()  # a healthy, empty queue for status and retry
    found = _loaded_by(*(arg.format(state=tmp_path) for arg in args))
    # structlog imports rich's pretty tracebacks when rich is installed (transformers brings it):
    # a third of `cutout status`'s start-up, for commands that print their answer and log nothing.
    assert found == {"code": 0, "heavy": [], "logging": [], "life_cycle": []}


def test_each_kind_of_error_stops_a_command_with_its_own_documented_exit_status() -> None:
    from daemon.errors import ConfigError, CutoutError, JobError, ModelLoadError, QueueDamaged, QueueError, ServiceError

    kinds = [ConfigError, ModelLoadError, ServiceError, QueueError, QueueDamaged, JobError]
    assert {kind.__base__ for kind in kinds} <= {CutoutError, QueueError}
    statuses = [kind.exit_status for kind in kinds]
    assert len(set(statuses)) == len(kinds) and 0 not in statuses
    reasons = (PACKAGE.parent / "docs" / "reasons.md").read_text(encoding="utf-8")
    table = reasons[reasons.index("### Exit statuses"):reasons.index("## Safety rules")]
    assert all(f"\n| {status} |" in table for status in statuses)


def test_the_wheel_ships_no_helper_that_runs_runuser_or_chown() -> None:
    """Test-only helpers that act as root (the throwaway PostgreSQL server) live under tests/."""
    shipped = {path.relative_to(PACKAGE).as_posix(): path.read_text(encoding="utf-8") for path in PACKAGE.rglob("*.py")}
    assert sorted(name for name, text in shipped.items() if "runuser" in text or "os.chown(" in text) == []


def test_every_file_the_package_reads_ships_in_the_wheel() -> None:
    """Templates, assets and markers live beside the code; the wheel carries only what
    `package-data` names, so a new folder of templates is caught here, not by a user's 500."""
    import tomllib

    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    globs = project["tool"]["setuptools"]["package-data"]["daemon"]
    data = [path.relative_to(PACKAGE) for path in PACKAGE.rglob("*")
            if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts]
    assert data and sorted(str(path) for path in data if not any(path.match(glob) for glob in globs)) == []
