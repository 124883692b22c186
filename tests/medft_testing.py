"""Helpers for the end-to-end tests: run ``medft train`` in a subprocess, a tiny run config, and
a test-only Lightning callback (subprocess runs get PYTHONPATH=tests, so configs can name it).

``+callbacks.pause._target_=medft_testing.PauseAtStep`` is inert unless the environment names a
step (MEDFT_TEST_PAUSE_AT_STEP) and a marker file (MEDFT_TEST_PAUSE_MARKER): then, once that
many optimizer steps are done, it writes the marker and sleeps, so a test can SIGKILL the run at
a known point without racing it; a signal that medft.runs.preempt.Preemption catches ends the pause, so
the run stops (and saves) right after that step.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# A few seconds of training: 36 train samples, batch 8 = 5 steps an epoch; 1-batch val and test.
TINY = [
    "dataset.train_fraction=0.03",
    "data.batch_size=8",
    "data.eval_batch_size=8",
    "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1",
    "eval.generate.max_new_tokens=2",
    "callbacks.progress_bar.refresh_rate=0",
]


def env_for(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a subprocess run: logs and the demo cache under ``tmp``."""
    env = dict(os.environ, MEDFT_LOG_DIR=str(tmp / "logs"), MEDFT_CACHE_DIR=str(tmp / "cache"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def medft_train(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m medft.cli train ARGS`` from the repo root."""
    return subprocess.run(
        [sys.executable, "-m", "medft.cli", "train", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )


def start_paused(args: list[str], env: dict[str, str], marker: Path, pause_at: int) -> subprocess.Popen:
    """Start ``medft train ARGS`` with :class:`PauseAtStep` at ``pause_at``; return the process once it
    has written ``marker`` (paused after that step). stderr is piped; stdout discarded."""
    env = dict(env, MEDFT_TEST_PAUSE_AT_STEP=str(pause_at), MEDFT_TEST_PAUSE_MARKER=str(marker))
    proc = subprocess.Popen([sys.executable, "-m", "medft.cli", "train", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, f"run ended before step {pause_at}: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, f"run never reached step {pause_at}"
            time.sleep(0.1)
    except BaseException:
        proc.kill()
        raise
    return proc


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """The stderr lines that medft printed as its own errors."""
    return [line for line in proc.stderr.splitlines() if line.startswith("medft: error:")]


def train_in_process(args: list[str], tmp: Path, cache_dir: Path | None = None) -> int:
    """``medft train ARGS`` through the CLI's entry point inside this process -> exit status."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDFT_LOG_DIR", str(tmp / "logs"))
        mp.setenv("MEDFT_CACHE_DIR", str(cache_dir or tmp / "cache"))
        mp.setattr(sys, "argv", list(sys.argv))
        from medft.cli import main

        try:
            main(["train", *args])
        except SystemExit as exit_:
            return exit_.code
    return 0


def quantize_here(monkeypatch: pytest.MonkeyPatch) -> str:
    """Where ``model.quantization`` runs in this test: the CUDA GPU, or, without one, bitsandbytes' CPU
    backend, with :func:`medft.models.quantization.quantization_device` (the one place medft decides that
    quantization can run here) answering ``"cpu"`` for this test only: users without CUDA are still refused.
    Skips without bitsandbytes. Returns the device the quantized model lives on."""
    pytest.importorskip("bitsandbytes", reason="model.quantization needs bitsandbytes: pip install 'medft[quantization]'")
    import torch

    if torch.cuda.is_available():
        return "cuda"
    monkeypatch.setattr("medft.models.quantization.quantization_device", lambda: "cpu")
    return "cpu"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """MEDFT_CACHE_DIR of a test module: the demo set is generated once per module."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def cli(tmp_path, cache, monkeypatch, capsys):
    """``cli(*args)`` runs ``medft train ARGS`` inside the test process, in ``tmp_path/run``
    -> (exit status, stdout, stderr, run dir). The CLI's own entry point (argument rewriting,
    Hydra, the task wrapper) runs; only the process is shared, so heavy imports are paid once."""
    monkeypatch.setenv("MEDFT_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("MEDFT_CACHE_DIR", str(cache))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    from medft.cli import main

    def run(*args: str, run_dir: Path | None = None):
        run_dir = run_dir or tmp_path / "run"
        status = 0
        try:
            main(["train", *args, f"hydra.run.dir={run_dir}"])
        except SystemExit as exit_:
            status = exit_.code
        out = capsys.readouterr()
        return status, out.out, out.err, run_dir

    return run


class PauseAtStep(L.Callback):
    def __init__(self) -> None:
        self.step = int(os.environ.get("MEDFT_TEST_PAUSE_AT_STEP", "-1"))
        self.marker = os.environ.get("MEDFT_TEST_PAUSE_MARKER")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.marker and trainer.global_step == self.step:
            Path(self.marker).write_text(f"{trainer.global_step} {trainer.current_epoch} {batch_idx}\n")
            deadline = time.monotonic() + 600  # until killed, or until a signal asks medft to stop
            while time.monotonic() < deadline and not any(getattr(c, "received", None) for c in trainer.callbacks):
                time.sleep(0.05)
            if time.monotonic() < deadline:
                time.sleep(0.5)  # the step still takes a while: further signals arrive before it ends


def run_main(main, capsys, *args: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of a command's ``main(ARGS)`` run in this process."""
    status = 0
    try:
        main(list(args))
    except SystemExit as exit_:
        status = exit_.code
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.fixture
def medft(tmp_path, cache, monkeypatch, capsys):
    """``medft COMMAND ARGS`` through the CLI inside this process -> (status, stdout, stderr)."""
    monkeypatch.setenv("MEDFT_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("MEDFT_CACHE_DIR", str(cache))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    from medft.cli import main

    return lambda *args: run_main(main, capsys, *args)


# A finding as results.md and the docs write it: "+6.3 [+1.0, +12.3]" (a line may break inside).
FINDING_QUOTE = r"([+\u2212][0-9.]+)\s+\[([+\u2212][0-9.]+),\s+([+\u2212][0-9.]+)\]"


def shipped_findings(shipped: Path) -> tuple[list[dict[str, str]], set[tuple[str, str, str]]]:
    """A shipped study run's findings.csv rows, each verdict checked against the interval the file prints,
    and the set of quotes `medft report` wrote in its results.md's findings."""
    import csv
    import re

    found = list(csv.DictReader((shipped / "findings.csv").open()))
    for f in found:
        low, high = float(f["ci_low"]), float(f["ci_high"])
        assert f["verdict"] == ("ahead" if low > 0 else "behind" if high < 0 else "unresolved"), f
    return found, set(re.findall(FINDING_QUOTE, (shipped / "results.md").read_text().split("## Runs")[0]))


def quoted_findings(text: str) -> list[tuple[str, str, str]]:
    import re

    return re.findall(FINDING_QUOTE, text)
