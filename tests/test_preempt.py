"""Runs that survive a cluster: a signal saves and stops a run (exit 3, status.json ``preempted``),
``resume=auto`` continues it exactly, refuses a finished run dir and starts an empty one; a SLURM
job requeues itself through Lightning; ``medft report`` shows each run's state."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from medft_testing import REPO, TINY, cache, cli, env_for, medft_train, start_paused  # noqa: F401 - fixtures
from test_resume import RUN, metrics_of, uninterrupted  # noqa: F401 - the fixture: the same run, never stopped

from medft.runs.trust import EXIT_PREEMPTED


def start_and_signal(args, env, run_dir, pause_at, signals=(signal.SIGTERM,)):
    """Start ``medft train ARGS``; once ``pause_at`` steps are done send ``signals`` (0.1 s apart: the
    step ends 0.5 s after the first, see medft_testing.PauseAtStep).
    -> (exit status, seconds from the first signal to the exit, stderr)."""
    marker = run_dir.parent / f"{run_dir.name}-paused-at-{pause_at}"
    proc = start_paused(args, env, marker, pause_at)
    try:
        sent = time.monotonic()
        for i, sig in enumerate(signals):
            if i:
                time.sleep(0.1)
            if proc.poll() is None:
                os.kill(proc.pid, sig)
        err = proc.communicate(timeout=120)[1]
        return proc.returncode, time.monotonic() - sent, err
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_sigterm_saves_and_resume_auto_matches_uninterrupted(uninterrupted, tmp_path):
    """SIGTERM mid-way through epoch 2 (and two more signals while it saves): exit 3 within 60 s,
    last.ckpt of that step, status.json preempted. The identical command again (resume=auto) ends
    like the run that was never stopped; once more, the finished run dir is refused in one line."""
    run_dir, env = tmp_path / "run", env_for(uninterrupted.parent)
    command = [*RUN, f"hydra.run.dir={run_dir}", "resume=auto"]
    status, seconds, err = start_and_signal(command, env, run_dir, pause_at=8,
                                            signals=(signal.SIGTERM, signal.SIGINT, signal.SIGTERM))
    assert status == EXIT_PREEMPTED, err[-3000:]
    assert seconds < 60
    assert "medft: SIGTERM received: finishing this step" in err and "again: still saving" in err
    assert f"medft: SIGTERM: run stopped at step 8, {run_dir / 'checkpoints' / 'last.ckpt'} saved" in err
    assert "Traceback" not in err
    state = json.loads((run_dir / "status.json").read_text())
    assert (state["state"], state["step"], state["signal"]) == ("preempted", 8, "SIGTERM")
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["global_step"], last["epoch"]) == (8, 1)  # the step it was on, mid-way through epoch 2
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "error.txt").exists()
    assert not list(run_dir.rglob("*.tmp"))

    report = subprocess.run([sys.executable, "-m", "medft.cli", "report", str(run_dir), f"out={tmp_path}"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert "| preempted |" in report.stdout and "stopped at step 8 (SIGTERM)" in report.stdout

    resumed = medft_train(command, env)  # what a requeued job does: the same command line
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resume=auto: continuing the unfinished run in {run_dir}" in resumed.stdout
    assert metrics_of(run_dir) == metrics_of(uninterrupted)
    assert (run_dir / "predictions.jsonl").read_text() == (uninterrupted / "predictions.jsonl").read_text()
    assert json.loads((run_dir / "status.json").read_text())["state"] == "ok"

    config = (run_dir / ".hydra" / "config.yaml").read_bytes()
    again = medft_train(command, env)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"medft: error: resume=auto: {run_dir} holds a finished run (metrics.json): nothing to continue; give "
        f"another hydra.run.dir to start a new run (or resume={run_dir} trainer.max_epochs=N to train it longer)"
    ]
    assert (run_dir / ".hydra" / "config.yaml").read_bytes() == config  # refused before Hydra wrote anything


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGINT])
def test_sigusr1_and_ctrl_c_save_the_same_way(sig, tmp_path):
    """SLURM's early warning and Ctrl-C: mid-way through epoch 1, last.ckpt of step 3, exit 3."""
    run_dir = tmp_path / "run"
    status, seconds, err = start_and_signal([*RUN, f"hydra.run.dir={run_dir}"], env_for(tmp_path), run_dir,
                                            pause_at=3, signals=(sig,))
    assert status == EXIT_PREEMPTED and seconds < 60, err[-3000:]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "preempted"
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    assert "KeyboardInterrupt" not in err and "Traceback" not in err


@pytest.mark.slow
def test_slurm_requeue_goes_through_lightning(tmp_path):
    """In a SLURM job (SLURM_JOB_ID set) SIGUSR1 saves last.ckpt, then Lightning's SLURM environment
    runs ``scontrol requeue <job>`` (a stand-in scontrol here); its extra hpc checkpoint is not kept."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol-calls"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    env = env_for(tmp_path, SLURM_JOB_ID="4242", SLURM_NTASKS="1", SLURM_JOB_NAME="medft", SLURM_NODELIST="localhost",
                  SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0", PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    run_dir = tmp_path / "run"
    status, _, err = start_and_signal([*RUN, f"hydra.run.dir={run_dir}"], env, run_dir, pause_at=3,
                                      signals=(signal.SIGUSR1,))
    assert status == EXIT_PREEMPTED, err[-3000:]
    assert calls.read_text().split() == ["requeue", "4242"]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    assert not list(run_dir.glob("hpc_ckpt_*.ckpt"))


# -- resume=auto without training -------------------------------------------------------------
def finished_run(path: Path) -> Path:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text("- +tune=lora\n")
    (path / "metrics.json").write_text("{}")
    return path


def test_resume_auto_refuses_a_finished_run_dir_in_one_line(tmp_path, monkeypatch):
    from medft.runs.resume import check_auto_resume
    from medft.util.errors import ConfigError

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    run = finished_run(tmp_path / "done")
    with pytest.raises(ConfigError, match=r"resume=auto: .*done holds a finished run .*give another hydra.run.dir"):
        check_auto_resume(["+tune=lora", f"hydra.run.dir='{run}'", "resume=auto"])
    check_auto_resume(["+tune=lora", f"hydra.run.dir={run}"])  # not asked for: Hydra's own rules
    check_auto_resume(["+tune=lora", f"hydra.run.dir={tmp_path / 'new'}", "resume=auto"])  # nothing there: start
    (run / "error.txt").write_text("medft: error: a later attempt failed")
    check_auto_resume(["+tune=lora", f"hydra.run.dir={run}", "resume=auto"])  # failed: continue it
    (run / "error.txt").unlink()
    monkeypatch.setenv("SLURM_JOB_ID", "7")  # inside a SLURM job resume=auto is the default ...
    with pytest.raises(ConfigError, match=r"resume=auto \(on in a SLURM job\)"):
        check_auto_resume(["+tune=lora", f"hydra.run.dir={run}"])
    check_auto_resume(["+tune=lora", f"hydra.run.dir={run}", "resume=false"])  # ... unless switched off


def test_cli_refuses_a_finished_run_dir(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    run = finished_run(tmp_path / "done")
    status, _, err, _ = cli("+tune=layernorm", "resume=auto", run_dir=run)
    assert status == 2 and err.strip().count("\n") == 0 and f"{run} holds a finished run" in err
    assert (run / ".hydra" / "overrides.yaml").read_text() == "- +tune=lora\n"


def test_auto_resume_switch(monkeypatch):
    from omegaconf import OmegaConf

    from medft.runs.runner import auto_resume

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert auto_resume(OmegaConf.create({"resume": "auto", "ckpt_path": None}))
    assert not auto_resume(OmegaConf.create({"resume": None, "ckpt_path": None}))
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert auto_resume(OmegaConf.create({"resume": None, "ckpt_path": None}))
    assert not auto_resume(OmegaConf.create({"resume": False, "ckpt_path": None}))
    assert not auto_resume(OmegaConf.create({"resume": None, "ckpt_path": "x/last.ckpt"}))  # resume=RUN_DIR
    assert not auto_resume(OmegaConf.create({"ckpt": "RUN"}))  # medft eval's config: no resume key


# -- status.json -----------------------------------------------------------------------------
def test_a_failed_run_says_failed(cli, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    status, _, _, run = cli("+tune=layernorm", "optim.lr=-1")
    assert status == 2
    state = json.loads((run / "status.json").read_text())
    assert state["state"] == "failed" and state["error"].startswith("medft: error: optim.lr=-1")


def test_report_shows_each_runs_state(tmp_path):
    from medft.commands.report import find_runs, read_run
    from medft.runs.trust import write_status

    def run(name: str) -> Path:
        path = tmp_path / name
        (path / ".hydra").mkdir(parents=True)
        (path / ".hydra" / "config.yaml").write_text("model: {name: blip_tiny}\ndataset: {name: demo}\ntune: {name: lora}\n")
        return path

    write_status(run("preempted"), "preempted", step=8, signal="SIGTERM", checkpoint="checkpoints/last.ckpt")
    write_status(run("killed"), "running")  # no process holds it: killed without a word
    live = run("live")
    write_status(live, "running")
    (live / ".medft.lock").write_text(json.dumps({"host": "h", "pid": os.getpid()}))
    done = run("done")
    (done / "metrics.json").write_text('{"test/acc": 0.5}')
    write_status(done, "ok", step=10)
    failed = run("failed")
    (failed / "error.txt").write_text("medft: error: boom\n")
    write_status(failed, "failed", error="medft: error: boom")
    rows = {Path(r["run"]).name: r for r in map(read_run, find_runs([tmp_path]))}
    assert {k: r["status"] for k, r in rows.items()} == {
        "preempted": "preempted", "killed": "incomplete", "live": "running", "done": "ok", "failed": "failed"}
    assert "stopped at step 8 (SIGTERM)" in rows["preempted"]["error"] and "resume=auto" in rows["preempted"]["error"]
    assert "killed while running" in rows["killed"]["error"]


@pytest.mark.slow
def test_requeued_sweep_resumes_its_own_cells(tmp_path):
    """A sweep with a given hydra.sweep.dir, run again (as a requeued job does): finished cells are not
    run again, an unfinished one continues from its last.ckpt, in the same cell dirs."""
    sweep, env = tmp_path / "sweep", env_for(tmp_path)
    command = ["-m", "tune=layernorm,lora", *TINY, "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}", "resume=auto"]
    first = medft_train(command, env)
    assert first.returncode == 0, first.stderr[-3000:]
    cells = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert cells == ["layernorm_demo_blip_tiny", "lora_demo_blip_tiny"]  # resume=auto is not in the names
    done, cut = sweep / cells[0], sweep / cells[1]
    done_metrics = (done / "metrics.json").read_bytes()
    (cut / "metrics.json").unlink()  # as if pre-empted after its last checkpoint
    (cut / "predictions.jsonl").unlink()

    again = medft_train(command, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resume=auto: {done} is finished (metrics.json): not run again" in again.stdout
    assert f"resume=auto: continuing the unfinished run in {cut} from {cut / 'checkpoints' / 'last.ckpt'}" in again.stdout
    assert (done / "metrics.json").read_bytes() == done_metrics
    assert json.loads((cut / "metrics.json").read_text())["train/steps"] == 5 and (cut / "predictions.jsonl").is_file()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")) == cells
