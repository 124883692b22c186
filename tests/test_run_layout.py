"""The run dir as one object (issue 23): medft/runs/layout.py alone spells a run dir's names and status words."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import medft
from medft.runs import PLACEHOLDER, RELATIVE, RunDir, Status

PACKAGE = Path(medft.__file__).parent
LAYOUT = PACKAGE / "runs" / "layout.py"
# every name of a run dir's layout; a string constant holding one outside medft/runs/layout.py is a second spelling
NAMES = (".hydra", "config.yaml", "overrides.yaml", "hydra.yaml", "metrics.json", "predictions.jsonl", "predictions_",
         "candidates.json", "trained.safetensors", "checkpoints/", "last.ckpt", "best.ckpt", "hpc_ckpt", "error.txt",
         "status.json", ".medft.lock", "config_dirs.json", "export_")
EXACT = ("checkpoints", "errors")  # folder names: a constant that is one is a path part; in prose they are words


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (a module's, a class's, a function's)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def spellings(source: str, where: str = "<probe>") -> list[str]:
    """``line: name in 'constant'`` for every string constant (f-strings' constant parts included, docstrings
    not) of ``source`` that holds a layout name."""
    tree = ast.parse(source, where)
    docs = _docstrings(tree)
    return [
        f"{where}:{node.lineno}: {name} in {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
        for name in NAMES + EXACT
        if (name in node.value if name in NAMES else name == node.value)
    ]


def test_no_module_outside_the_layout_spells_a_run_dir_name():
    scripts = PACKAGE.parent / "scripts"  # recipes beyond the CLI (a checkout's; a wheel has none)
    modules = [p for p in [*PACKAGE.rglob("*.py"), *scripts.rglob("*.py")] if p != LAYOUT]
    assert len(modules) > 60 and PACKAGE / "commands" / "train.py" in modules and PACKAGE / "runs" / "__init__.py" in modules
    found = [hit for path in modules for hit in spellings(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))]
    assert found == [], "a run dir's names come from medft.runs.layout.RunDir:\n" + "\n".join(found)


def test_the_check_sees_plain_strings_fstrings_and_paths_but_not_docstrings():
    probe = '''
"""A module docstring may say metrics.json."""
def f(run, x):
    """So may a function's: checkpoints/last.ckpt."""
    a = run / "metrics.json"
    b = f"{run}/.hydra/config.yaml is missing ({x})"
    c = run / "checkpoints" / "last.ckpt", "the checkpoints saved so far"
    d = {"source/acc": "predictions_source.jsonl"}
    return "error.txt" in x
'''
    found = spellings(probe)
    assert sorted(int(hit.split(":")[1]) for hit in found) == [5, 6, 6, 7, 7, 8, 9], found
    assert sum("checkpoints in" in hit for hit in found) == 1  # the path part, not the word
    assert not any("docstring" in hit for hit in found)


def test_the_layout_spells_every_name_it_owns():
    hits = " ".join(spellings(LAYOUT.read_text(), "layout"))
    missing = [name for name in NAMES + EXACT if f" {name} in " not in hits]
    assert missing == ["checkpoints/"]  # the folder and its files are joined as paths, never spelled as one string


def test_paths_are_where_they_always_were(tmp_path):
    run = RunDir(tmp_path)
    assert RunDir(str(tmp_path)) == run and run.path == tmp_path
    expected = {
        run.hydra_dir: ".hydra", run.config: ".hydra/config.yaml", run.overrides: ".hydra/overrides.yaml",
        run.hydra_config: ".hydra/hydra.yaml", run.metrics: "metrics.json", run.predictions: "predictions.jsonl",
        run.predictions_of("source"): "predictions_source.jsonl", run.candidates: "candidates.json",
        run.trained: "trained.safetensors", run.checkpoints: "checkpoints", run.last_ckpt: "checkpoints/last.ckpt",
        run.best_ckpt: "checkpoints/best.ckpt", run.error: "error.txt", run.errors_dir: "errors",
        run.status: "status.json", run.lock: ".medft.lock", run.config_dirs: "config_dirs.json",
        run.export_dir("peft"): "export_peft",
    }
    assert {str(p.relative_to(tmp_path)): name for p, name in expected.items()} == {n: n for n in expected.values()}
    assert str(RELATIVE.last_ckpt) == "checkpoints/last.ckpt" and str(RELATIVE.config) == ".hydra/config.yaml"
    assert f"ckpt_path={PLACEHOLDER.last_ckpt}" == "ckpt_path=RUN_DIR/checkpoints/last.ckpt"


def test_predicates_and_finding_runs(tmp_path):
    run = RunDir(tmp_path / "sweep" / "0")
    assert not (run.is_run() or run.has_metrics() or run.has_error() or run.has_last_ckpt())
    run.hydra_dir.mkdir(parents=True)
    run.config.write_text("seed: 1\n")
    run.metrics.write_text("{}")
    run.error.write_text("boom")
    run.checkpoints.mkdir()
    run.last_ckpt.write_bytes(b"")
    assert run.is_run() and run.has_metrics() and run.has_error() and run.has_last_ckpt()
    (tmp_path / "sweep" / "not_a_run").mkdir()
    assert list(RunDir.find(tmp_path)) == [run]
    assert RunDir.of_checkpoint(run.best_ckpt) == run and RunDir.of_checkpoint(run.trained) == run


def test_status_json_of_earlier_versions_reads_right(tmp_path):
    """Before the run-dir object, status.json said ``finished`` where run_state said ``ok``: both read as ok."""
    from medft.commands.report import _unfinished
    from medft.runs.trust import read_status, run_state, write_status

    (tmp_path / "status.json").write_text(json.dumps({"state": "finished", "step": 10, "time": "t", "host": "h", "pid": 1}))
    assert read_status(tmp_path)["state"] == Status.OK and read_status(tmp_path)["step"] == 10
    assert Status.read("finished") == Status.OK == "ok"
    for word in ("running", "preempted", "failed", "ok"):
        assert Status.read(word) == word
    assert Status.read("incomplete") is None and Status.read("done") is None and Status.read(3) is None
    (tmp_path / "status.json").write_text(json.dumps({"state": "nonsense"}))
    assert read_status(tmp_path) == {} and run_state(tmp_path) == "incomplete"
    write_status(tmp_path, Status.OK, step=3)
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "ok"  # the one word, written
    with pytest.raises(ValueError):
        write_status(tmp_path, "finished")  # medft writes the one vocabulary only
    write_status(tmp_path, Status.PREEMPTED, step=4, signal="SIGTERM")
    assert _unfinished(tmp_path)[0] == "preempted" and "last.ckpt saved" in _unfinished(tmp_path)[1]


def test_run_state_words_are_the_status_words(tmp_path):
    from medft.runs.trust import run_state

    assert run_state(tmp_path) == Status.INCOMPLETE == "incomplete"
    RunDir(tmp_path).metrics.write_text("{}")
    assert run_state(tmp_path) == Status.OK
    RunDir(tmp_path).error.write_text("boom")
    assert run_state(tmp_path) == Status.FAILED
    assert f"{Status.OK}" == "ok" and json.dumps({"status": Status.OK}) == '{"status": "ok"}'


def test_the_checkpoint_callbacks_write_where_the_run_dir_looks():
    """configs/callbacks/default.yaml (YAML cannot import the layout) names the same folder and files."""
    import yaml

    callbacks = yaml.safe_load((PACKAGE / "configs" / "callbacks" / "default.yaml").read_text())
    written = {f"{c['dirpath']}/{c['filename']}.ckpt" for c in callbacks.values() if isinstance(c, dict) and "dirpath" in c}
    looked_for = {f"${{paths.output_dir}}/{RELATIVE.best_ckpt}", f"${{paths.output_dir}}/{RELATIVE.last_ckpt}"}
    assert written == looked_for
