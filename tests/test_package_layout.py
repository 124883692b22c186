"""The commands live in medft/commands/ and the library never imports them (issue 11); the commands share
medft.training.pipeline instead of importing each other, and the embedded model is built in-process (issue 23)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import medft
from medft.cli import COMMANDS

PACKAGE = Path(medft.__file__).parent
LIBRARY = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in ("commands", "cli.py")]  # all but the CLI


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path``, relative imports made absolute."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def test_no_library_module_imports_a_command():
    assert len(LIBRARY) > 60 and PACKAGE / "runs" / "runner.py" in LIBRARY and PACKAGE / "models" / "blip.py" in LIBRARY
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
        for path in LIBRARY
        for line, name in imported_modules(path)
        if name == "medft.commands" or name.startswith("medft.commands.")
    ]
    assert offenders == [], "the library must not import a command (move the shared code into the library):\n" + "\n".join(offenders)


def test_the_check_sees_every_kind_of_import(tmp_path, monkeypatch):
    """The ast check would catch a library module importing a command, absolutely or relatively."""
    probe = PACKAGE / "data" / "probe.py"  # only parsed, never written: paths decide the package
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: (
        "import medft.commands.train\nfrom medft.commands.eval import load_run_model\n"
        "from medft import commands\nfrom ..commands import report\n"))
    names = [name for _, name in imported_modules(probe)]
    assert {"medft.commands.train", "medft.commands.eval", "medft.commands", "medft.commands.report"} <= set(names)


COMMANDS_DIR = PACKAGE / "commands"


def command_imports(path: Path) -> list[str]:
    """``file:line imports medft.commands.X`` for every import in ``path`` of a command module other than its own."""
    own = f"medft.commands.{path.stem}"
    return [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
        for line, name in imported_modules(path)
        if name.startswith("medft.commands.") and name != own and not name.startswith(own + ".")
        and name.removeprefix("medft.commands.").split(".")[0] != "__init__"
    ]


def test_no_command_imports_another_command():
    """What two commands share (run loading, the pipeline's steps, argument parsing) lives in the library."""
    commands = sorted(COMMANDS_DIR.glob("*.py"))
    assert {"train.py", "eval.py", "pretrain.py", "ask.py", "export.py", "rescore.py"} <= {p.name for p in commands}
    offenders = [found for path in commands for found in command_imports(path)]
    assert offenders == [], "a command imports another (move what they share into medft.training.pipeline):\n" + "\n".join(offenders)


PROCESS_STARTERS = {"subprocess", "multiprocessing", "concurrent.futures", "os.system", "os.popen", "os.fork", "os.forkpty",
                    "os.posix_spawn", "os.posix_spawnp", *(f"os.{n}" for n in dir(__import__("os")) if n.startswith(("spawn", "exec")))}


def process_starts(path: Path) -> list[str]:
    """``line: name`` of every module import and ``os.*`` call in ``path`` that can start another process."""
    found = [f"{line}: {name}" for line, name in imported_modules(path) if name in PROCESS_STARTERS or name.split(".")[0] in PROCESS_STARTERS]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and f"{node.value.id}.{node.attr}" in PROCESS_STARTERS:
            found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_the_embedded_model_is_built_without_another_process():
    """The pipeline builds the embedded model with its own recipe as a library call (run_recipe -> pretrain),
    not `python -m medft.cli pretrain`; medft.training.embedded only keeps the cache and runs what it is handed."""
    import inspect

    from medft.training import pipeline

    assert process_starts(PACKAGE / "training" / "embedded.py") == []
    assert process_starts(PACKAGE / "training" / "pipeline.py") == []
    assert "ensure_embedded(" in inspect.getsource(pipeline.build_net) and "run_recipe)" in inspect.getsource(pipeline.build_net)
    assert "pretrain(cfg," in inspect.getsource(pipeline.run_recipe)


def test_the_checks_see_a_command_importing_a_command_and_a_process_started(monkeypatch):
    probe = COMMANDS_DIR / "ask.py"  # only parsed, never written: paths decide the package
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: (
        "import medft.commands.ask.x\nfrom medft.commands.eval import load_run_model\nfrom . import export\n"
        "import subprocess\nimport os\nos.execv('python', [])\nfrom multiprocessing import Process\n"))
    assert command_imports(probe) == [f"medft/commands/ask.py:{n} imports {m}" for n, m in (
        (2, "medft.commands.eval"), (2, "medft.commands.eval.load_run_model"), (3, "medft.commands.export"))]
    assert process_starts(probe) == ["4: subprocess", "7: multiprocessing", "7: multiprocessing.Process", "6: os.execv"]


def test_every_cli_command_is_a_module_of_medft_commands_with_a_main():
    assert set(COMMANDS) == {"train", "pretrain", "report", "params", "data", "eval", "export", "ask"}
    for name in COMMANDS:  # medft NAME runs medft.commands.NAME.main
        assert callable(importlib.import_module(f"medft.commands.{name}").main), name
    listed = (PACKAGE / "commands" / "__init__.py").read_text()
    assert all(f"``{name}``" in listed for name in COMMANDS)  # the package docstring lists every command


def test_production_code_never_imports_the_test_data_builders():
    """medft.testing (test-data builders) is for tests/ and scripts/: nothing else in medft imports it."""
    production = [p for p in PACKAGE.rglob("*.py") if "testing" not in p.relative_to(PACKAGE).parts]
    assert len(production) > 40 and (PACKAGE / "testing" / "fixtures.py").is_file()
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
        for path in production
        for line, name in imported_modules(path)
        if name == "medft.testing" or name.startswith("medft.testing.")
    ]
    assert offenders == [], "\n".join(offenders)


LAYERS = {"util", "config", "runs", "training", "data", "metrics", "models", "commands", "configs", "testing"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """medft module -> the medft modules it imports, at any depth of the file (function-level imports too)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for _, imported in imported_modules(path):
            while imported and imported not in modules:  # `from medft.x import name`: the module is medft.x
                imported = imported.rpartition(".")[0]
            if imported and imported != name and imported != "medft":
                edges.add(imported)
        graph[name] = edges
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan): each is an import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_no_import_circle_among_medft_modules():
    """Layers, not a knot: no medft module reaches itself through imports, counting those inside functions."""
    graph = import_graph()
    assert len(graph) > 70 and "medft.config.validate" in graph["medft.training.pipeline"]
    assert import_circles(graph) == []


def test_the_circle_check_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert import_circles(graph) == [["a", "b", "c"]]


def test_the_top_level_holds_only_the_cli_the_tuning_module_and_layers():
    """Flat modules belong in a layer (util, config, runs, training, data, metrics, models, commands)."""
    top = {p.name for p in PACKAGE.iterdir() if not p.name.startswith((".", "__pycache__"))}
    assert top - {"__init__.py", "cli.py", "tuning.py", "py.typed"} == LAYERS & top
    assert {"util", "config", "runs", "training"} <= top
