"""medft chooses torch's intra-op threads: the cores it may use, shared among a joblib sweep's jobs."""

from __future__ import annotations

import os

import pytest

from medft.util import threads


@pytest.fixture(autouse=True)
def no_user_setting(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)


def test_cgroup_quota_caps_the_cores(tmp_path, monkeypatch):
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    assert threads.cgroup_cpus(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpus(tmp_path) is None
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(threads, "cgroup_cpus", lambda: 3.5)
    assert threads.usable_cores() == 3


def test_affinity_not_the_machine_decides(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 3})
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(threads, "cgroup_cpus", lambda: None)
    assert threads.choose_threads() == (2, "2 usable cores")


def test_joblib_jobs_share_the_cores_and_the_user_setting_wins(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    assert threads.choose_threads(n_jobs=2) == (4, "8 usable cores / 2 parallel jobs")
    assert threads.choose_threads(n_jobs=16)[0] == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose_threads(n_jobs=2) == (3, "OMP_NUM_THREADS=3")
    monkeypatch.setenv(threads.THREADS_ENV, "5")
    assert threads.choose_threads(n_jobs=2) == (5, "MEDFT_THREADS=5")


def test_configure_sets_torch_threads(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv(threads.THREADS_ENV, "1")
    try:
        assert threads.configure(n_jobs=1) == (1, "MEDFT_THREADS=1")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_cli_makes_idle_openmp_threads_sleep():
    import subprocess
    import sys

    code = ("import os, sys\nfrom medft.cli import main\ntry:\n    main(['params', 'modes=[layernorm]'])\n"
            "except SystemExit:\n    pass\nprint(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.stdout.strip().splitlines()[-1] == "PASSIVE True", res.stderr[-2000:]
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # the user's setting wins
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.stdout.strip().splitlines()[-1] == "ACTIVE True", res.stderr[-2000:]


def test_a_joblib_sweep_splits_the_cores_between_its_jobs(run_cli, tmp_path):
    import json

    from tests.conftest import FAST

    out = run_cli("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "tune=layernorm,bitfit", *FAST)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in (tmp_path / "logs").rglob("metrics.json")]
    assert len(runs) == 2
    expected = max(1, threads.usable_cores() // 2)
    assert [r["system/threads"] for r in runs] == [expected, expected]
