"""Benchmark every tune mode: step time, peak memory, trainable parameters, checkpoint bytes and
evaluation throughput on a mid-size BLIP VQA model (random weights), on CPU. Also `make bench`.

    python scripts/bench.py                          # configs/model/blip_bench.yaml, ~70M parameters
    python scripts/bench.py --model blip_tiny --steps 2 --warmup 1 --out /tmp/b   # smoke run

Each mode runs in a fresh subprocess, so its peak RSS (``resource.getrusage``) is its own. Inside
it, medft's step (MedVLMModule + Lightning Trainer, as ``medft train`` runs it) and a minimal
hand-written PyTorch step (forward, backward, AdamW over the trainable parameters; same model,
batch and optimizer settings) alternate, one after the other, so their ratio holds on a busy
machine. Peak memory is taken after a first medft-only phase, before the hand loop allocates its
own optimizer state. peft's ``LNTuningConfig`` (the same norm modules as targets) runs the same
way in its own subprocess. Those processes run minutes apart under a shared machine's drifting
load, so the ratios between modes (``vs full``, layernorm vs peft) come from one more process that
runs the hand-written step of every mode in round-robin. Writes ``bench.json`` and ``bench.md``
into ``--out`` (default ``logs/bench/<time>``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from medft.runs.layout import RunDir
from medft.tuning import MODE_ORDER

REPO = Path(__file__).resolve().parents[1]
MODES = [m for m in MODE_ORDER if m not in ("frozen", "prefix")]  # frozen: measured apart; prefix: not on BLIP


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports kilobytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


# ---------------------------------------------------------------- child: one mode, one process
def make_batch(net, batch_size: int, seed: int = 0) -> dict:
    """A fixed batch of random images and short questions: half CLOSED (yes/no), half OPEN."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    size = net.processor.image_processor.size["height"]
    records = []
    for i in range(batch_size):
        closed = i % 2 == 0
        records.append({
            "id": str(i), "answer_type": "CLOSED" if closed else "OPEN",
            "question": "is there a lesion in the left lung?" if closed else "what organ is shown in the image?",
            "answer": ("yes" if i % 4 == 0 else "no") if closed else "lung",
            "pil_image": Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)),
            "image": f"img{i}.png",
        })
    return net.collate(records)


def build(args: argparse.Namespace):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from medft.config.resolvers import register_resolvers
    from medft.config.search import CONFIG_DIR
    from medft.training.pipeline import build_net

    register_resolvers()
    overrides = [f"model={args.model}", "seed=0", f"model.gradient_checkpointing={str(args.grad_ckpt).lower()}"]
    overrides += [f"model.cache_image_features={'auto' if args.cache else 'false'}"] if args.cache is not None else []
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    tune = OmegaConf.to_container(compose_tune(args.mode), resolve=True)
    return build_net(cfg.model), tune


def compose_tune(mode: str):
    from omegaconf import OmegaConf

    from medft.config.search import CONFIG_DIR

    return OmegaConf.load(CONFIG_DIR / "tune" / f"{mode}.yaml")


def tune_peft_ln(net) -> None:
    """peft's LayerNorm tuning on the same norm modules medft's ``layernorm`` trains."""
    from peft import LNTuningConfig, get_peft_model

    from medft.tuning import norm_kind

    targets = [n for n, m in net.model.named_modules() if norm_kind(m)]
    base = net.model
    net.model = get_peft_model(base, LNTuningConfig(target_modules=targets))
    base.disable_input_require_grads()  # as medft does (tuning._wrap_lora): the hook breaks BLIP under checkpointing


class Repeat:
    """A map-style dataset that serves the same (already collated) batch ``n`` times."""

    def __init__(self, batch: dict, n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        return self.batch


def interleaved(args: argparse.Namespace) -> dict:
    """Hand-written steps of every mode (and peft LN, and lora with the cache) on one model each, in
    round-robin in one process: the ratios between modes (``vs full``, ``vs peft``) come from here,
    because separate processes run minutes apart under a different load."""
    import argparse as _argparse

    import torch

    from medft.tuning import apply_tuning, param_groups

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    labels = [*args.modes.split(","), *args.extra.split(",")]
    steps: dict[str, tuple] = {}
    for label in filter(None, labels):
        mode, cache, tuner = label.removesuffix("+cache"), label.endswith("+cache"), "medft"
        if label == "peft_ln":
            mode, tuner = "layernorm", "peft_ln"
        net, tune = build(_argparse.Namespace(**{**vars(args), "mode": mode, "cache": cache}))
        tune_peft_ln(net) if tuner == "peft_ln" else apply_tuning(net, tune)
        batch = make_batch(net, args.batch)
        opt = torch.optim.AdamW(param_groups(net.model, 0.01), lr=1e-5, weight_decay=0.01)
        steps[label] = (net, batch, opt)
    autocast = args.precision.startswith("bf16")
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(args.warmup + args.steps):
        for label, (net, batch, opt) in steps.items():
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = net.loss(batch)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(t[args.warmup:] or t) for label, t in times.items()}


def child(args: argparse.Namespace) -> dict:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from medft.runs.trained import save_trained
    from medft.training.callbacks import StepTimer
    from medft.training.module import MedVLMModule
    from medft.tuning import apply_tuning, count_parameters, param_groups

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    base_mb = rss_mb()
    net, tune = build(args)
    if args.tuner == "peft_ln":
        tune_peft_ln(net)
    else:
        apply_tuning(net, tune)
    counts = count_parameters(net.model, net.arch["components"])
    batch = make_batch(net, args.batch)
    lr, wd = 1e-5, 0.01
    optim = __import__("functools").partial(torch.optim.AdamW, lr=lr, weight_decay=wd)
    module = MedVLMModule(net, optim=optim, generate_kwargs={"max_new_tokens": 8, "num_beams": 1}, tune_name=args.mode)

    def trainer(steps: int, callbacks: list) -> L.Trainer:
        return L.Trainer(
            accelerator="cpu", devices=1, precision=args.precision, max_steps=steps, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, limit_val_batches=0, callbacks=callbacks,
        )

    def loader(n: int) -> DataLoader:
        return DataLoader(Repeat(batch, n), batch_size=None)

    # phase 1, medft only: its peak memory
    first = StepTimer(warmup=0)
    trainer(args.mem_steps, [first]).fit(module, train_dataloaders=loader(args.mem_steps))
    peak_mb = rss_mb()

    # phase 2: medft's step and the hand-written step, alternating on the same model and batch
    hand_opt = torch.optim.AdamW(param_groups(net.model, wd), lr=lr, weight_decay=wd)
    autocast = args.precision.startswith("bf16")
    hand_times: list[float] = []

    class HandStep(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, b, batch_idx) -> None:
            start = time.perf_counter()
            with torch.enable_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = net.loss(batch)
            loss.backward()
            hand_opt.step()
            hand_opt.zero_grad(set_to_none=True)
            hand_times.append(time.perf_counter() - start)

    timer = StepTimer(warmup=args.warmup)
    n = args.warmup + args.steps
    trainer(n, [timer, HandStep()]).fit(module, train_dataloaders=loader(n))
    medft_step = timer.summary()["time/step_s"]
    hand_step = statistics.median(hand_times[args.warmup:] or hand_times)

    # checkpoint: only what was trained
    with tempfile.TemporaryDirectory() as tmp:
        ckpt_bytes = save_trained(RunDir(tmp).trained, net, tune).stat().st_size

    # evaluation throughput (generate, and rank for CLOSED questions if the model can rank)
    module.eval()
    out = {"step_s": medft_step, "torch_loop_step_s": hand_step, "peak_mb": peak_mb, "base_mb": base_mb,
           "trainable": counts["trainable"], "total": counts["total"], "ckpt_bytes": ckpt_bytes,
           "steps": args.steps, "warmup": args.warmup}
    with torch.no_grad():
        net.generate(batch, max_new_tokens=8)  # warm-up
        start = time.perf_counter()
        for _ in range(args.eval_reps):
            net.generate(batch, max_new_tokens=8)
        out["eval_samples_per_s"] = args.batch * args.eval_reps / (time.perf_counter() - start)
        if net.can_rank:  # eval.closed=rank: yes/no by likelihood, one decoder pass
            net.rank(batch)
            start = time.perf_counter()
            for _ in range(args.eval_reps):
                net.rank(batch)
            out["eval_rank_samples_per_s"] = args.batch * args.eval_reps / (time.perf_counter() - start)
    return out


# ---------------------------------------------------------------- parent: every mode, the table
def run_child(args: argparse.Namespace, mode: str, tuner: str = "medft", cache: bool | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", "--mode", mode, "--tuner", tuner, "--model", args.model,
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
           "--mem-steps", str(args.mem_steps), "--eval-reps", str(args.eval_reps), "--precision", args.precision,
           "--threads", str(args.threads)]
    cmd += ["--grad-ckpt"] if args.grad_ckpt else []
    cmd += [] if cache is None else ["--cache" if cache else "--no-cache"]
    started = time.perf_counter()
    with tempfile.NamedTemporaryFile(suffix=".json") as fh:
        proc = subprocess.run([*cmd, "--result", fh.name], cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"bench child {mode}/{tuner} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(Path(fh.name).read_text())
    label = tuner if tuner != "medft" else mode + ("+cache" if cache and args.cache is None else "")
    print(f"  {label:<18} step {result['step_s']:.3f}s (loop {result['torch_loop_step_s']:.3f}s)  "
          f"peak {result['peak_mb']:.0f} MB  [{time.perf_counter() - started:.0f}s]", flush=True)
    return result


def run_interleaved(args: argparse.Namespace, extra: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--mode", "interleaved", "--modes", args.modes, "--extra", extra,
           "--model", args.model, "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
           "--precision", args.precision, "--threads", str(args.threads)] + (["--grad-ckpt"] if args.grad_ckpt else [])
    with tempfile.NamedTemporaryFile(suffix=".json") as fh:
        proc = subprocess.run([*cmd, "--result", fh.name], cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"bench interleaved child failed:\n{proc.stderr[-3000:]}")
        return json.loads(Path(fh.name).read_text())


# ---------------------------------------------------------------- two demo runs side by side
def demo_run(out: Path, name: str, steps: int, env: dict[str, str]) -> subprocess.Popen:
    """``medft train +tune=layernorm`` on the demo set (as a user runs it), ``steps`` training steps."""
    cmd = [sys.executable, "-m", "medft.cli", "train", "+tune=layernorm", "trainer.max_epochs=1",
           f"+trainer.limit_train_batches={steps}", "+trainer.limit_val_batches=1", "test=false",
           "callbacks.progress_bar.refresh_rate=0", f"hydra.run.dir={out / name}"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def demo_step_s(out: Path, names: list[str], procs: list[subprocess.Popen]) -> list[float]:
    steps = []
    for name, proc in zip(names, procs):
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"bench: demo run {name} failed:\n{err[-3000:]}")
        steps.append(json.loads(RunDir(out / name).metrics.read_text())["time/step_s"])
    return steps


def concurrency(args: argparse.Namespace, out: Path) -> dict:
    """Median step time of one demo run alone, then of each of two started together, alone again
    (the two alone runs bracket the pair, so the machine's drifting load shows). Threads: medft's own
    choice (the child environment drops OMP_NUM_THREADS unless --concurrent-env keeps it)."""
    env = dict(os.environ)
    if not args.concurrent_env:
        env.pop("OMP_NUM_THREADS", None)
        env.pop("MEDFT_THREADS", None)
    env.setdefault("MEDFT_CACHE_DIR", str(out / "cache"))
    root = out / "concurrency"
    demo_step_s(root, ["warm"], [demo_run(root, "warm", 3, env)])  # generates the demo set, warms the file cache
    result: dict = {"steps": args.concurrent_steps, "alone_s": [], "pair_s": []}
    for rep in range(args.concurrent_reps):
        names = [f"alone{rep}a"]
        result["alone_s"] += demo_step_s(root, names, [demo_run(root, names[0], args.concurrent_steps, env)])
        names = [f"pair{rep}a", f"pair{rep}b"]
        result["pair_s"] += demo_step_s(root, names, [demo_run(root, n, args.concurrent_steps, env) for n in names])
    names = ["alone_last"]
    result["alone_s"] += demo_step_s(root, names, [demo_run(root, names[0], args.concurrent_steps, env)])
    result["threads"] = json.loads(RunDir(root / "alone_last").metrics.read_text()).get("system/threads")
    result["alone_median_s"] = statistics.median(result["alone_s"])
    result["pair_median_s"] = statistics.median(result["pair_s"])
    result["ratio"] = result["pair_median_s"] / result["alone_median_s"]
    result["load_avg"] = os.getloadavg()
    return result


def concurrency_markdown(c: dict) -> str:
    return (
        f"two demo runs side by side (`medft train +tune=layernorm`, {c['steps']} steps each, medft's thread choice: "
        f"{c['threads']} per run): alone {c['alone_median_s']:.3f} s/step (runs: "
        + ", ".join(f"{x:.3f}" for x in c["alone_s"]) + f"), side by side {c['pair_median_s']:.3f} s/step each (runs: "
        + ", ".join(f"{x:.3f}" for x in c["pair_s"]) + f") -> {c['ratio']:.2f}x one alone "
        f"(sharing the cores fairly costs about 2x; load average at the end {c['load_avg'][0]:.1f})\n"
    )


def ratio(a: float | None, b: float | None) -> str:
    return "" if not a or not b else f"{a / b:.2f}x"


def markdown(bench: dict) -> str:
    modes, full = bench["modes"], bench["modes"].get("full", {})
    loop = bench["reference"]["torch_loop"]
    lines = [
        f"model {bench['config']['model']} ({bench['config']['total_params'] / 1e6:.1f}M params), batch "
        f"{bench['config']['batch']}, {bench['config']['steps']} timed steps after {bench['config']['warmup']} "
        f"warm-up, precision {bench['config']['precision']}, gradient checkpointing {bench['config']['grad_ckpt']}",
        "",
        "| mode | trainable | step s | torch loop s | medft / loop | interleaved loop s | vs full | peak MB | vs full | "
        "above base MB | vs full | ckpt bytes | eval samples/s (generate) | eval samples/s (rank) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [(m, r) for m, r in modes.items()] + [("peft LN (ref.)", bench["reference"]["peft_ln"])]
    for mode, r in rows:
        above = r["peak_mb"] - r["base_mb"]
        full_above = full.get("peak_mb", 0) - full.get("base_mb", 0)
        loop_s = loop.get(mode, {}).get("step_s", r.get("torch_loop_step_s"))
        rank = f"{r['eval_rank_samples_per_s']:.1f}" if r.get("eval_rank_samples_per_s") else ""
        lines.append(
            f"| {mode} | {r['trainable']:,} | {r['step_s']:.3f} | {loop_s:.3f} | {ratio(r['step_s'], loop_s)} | "
            f"{r['interleaved_loop_step_s']:.3f} | {ratio(r['interleaved_loop_step_s'], full.get('interleaved_loop_step_s'))} | "
            f"{r['peak_mb']:.0f} | {ratio(r['peak_mb'], full.get('peak_mb'))} | "
            f"{above:.0f} | {ratio(above, full_above)} | {r.get('ckpt_bytes', 0):,} | "
            f"{r.get('eval_samples_per_s', 0):.1f} | {rank} |"
        )
    ln, peft = modes.get("layernorm"), bench["reference"]["peft_ln"]
    if ln:
        lines += ["", f"layernorm vs peft LN tuning: step {ratio(ln['interleaved_loop_step_s'], peft['interleaved_loop_step_s'])} "
                      f"(interleaved; through medft's trainer in separate processes {ratio(ln['step_s'], peft['step_s'])}), "
                      f"peak memory {ratio(ln['peak_mb'], peft['peak_mb'])}"]
    lines += ["", "step s, torch loop s: medians, medft's step and the hand-written one alternating in the same process. "
              "interleaved loop s: the hand-written step of every mode in round-robin in one process, so that "
              "the machine's drifting load cancels in 'vs full' (medft's own step is within 'medft / loop' of it). peak MB: peak RSS of the mode's own process after its first "
              "step(s); 'above base' subtracts the RSS before the model was built (Python, torch, imports)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="blip_bench", help="model config (configs/model/<name>.yaml)")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--steps", type=int, default=4, help="timed steps per mode (after the warm-up)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--mem-steps", type=int, default=1, help="medft-only steps before the peak memory is read")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--eval-reps", type=int, default=1)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads per child (1: steadiest on a shared machine; 2 on an idle 2-core one)")
    p.add_argument("--precision", default="32-true", help="trainer.precision, e.g. bf16-mixed")
    p.add_argument("--grad-ckpt", action="store_true", help="model.gradient_checkpointing=true")
    p.add_argument("--cache", dest="cache", action="store_true", default=None)
    p.add_argument("--no-cache", dest="cache", action="store_false")
    p.add_argument("--out", default=None, help="output directory (default logs/bench/<time>)")
    p.add_argument("--parts", default="modes,concurrency",
                   help="what to run: modes (every tune mode), concurrency (two demo runs side by side vs one alone)")
    p.add_argument("--concurrent-steps", type=int, default=40, help="training steps of each demo run")
    p.add_argument("--concurrent-reps", type=int, default=2, help="alone/pair rounds (plus one alone at the end)")
    p.add_argument("--concurrent-env", action="store_true",
                   help="keep OMP_NUM_THREADS / MEDFT_THREADS for the demo runs (default: medft chooses)")
    # child-only
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="layernorm", help=argparse.SUPPRESS)
    p.add_argument("--tuner", default="medft", help=argparse.SUPPRESS)
    p.add_argument("--extra", default="", help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        Path(args.result).write_text(json.dumps(interleaved(args) if args.mode == "interleaved" else child(args)))
        return

    logs = Path(os.environ.get("MEDFT_LOG_DIR", REPO / "logs"))
    out = Path(args.out) if args.out else logs / "bench" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    parts = set(args.parts.split(","))
    if "concurrency" in parts:
        print(f"bench: two demo runs side by side vs one alone ({args.concurrent_steps} steps each)", flush=True)
        conc = concurrency(args, out)
        (out / "concurrency.json").write_text(json.dumps(conc, indent=2) + "\n")
        (out / "concurrency.md").write_text(concurrency_markdown(conc))
        print(concurrency_markdown(conc), flush=True)
    if "modes" not in parts:
        return
    print(f"bench: model {args.model}, modes {args.modes}, {args.steps} steps (+{args.warmup} warm-up), batch {args.batch}")
    cache = bool(args.cache)  # the modes themselves: without the image-feature cache, unless --cache
    modes = {m: run_child(args, m, cache=cache) for m in args.modes.split(",")}
    extra = {}
    if args.cache is None:  # the frozen vision encoder's features computed once (model.cache_image_features)
        for m in ("lora",):
            if m in modes:
                extra[f"{m}+cache"] = run_child(args, m, cache=True)
    peft = run_child(args, "layernorm", tuner="peft_ln", cache=cache)
    modes.update(extra)
    started_rr = time.perf_counter()
    rr = run_interleaved(args, ",".join([*extra, "peft_ln"]))
    print(f"  interleaved hand-written steps of every mode in one process [{time.perf_counter() - started_rr:.0f}s]")
    for label, step in rr.items():
        (peft if label == "peft_ln" else modes[label])["interleaved_loop_step_s"] = step
    any_run = next(iter(modes.values()))
    bench = {
        "modes": {m: {k: v for k, v in r.items() if k != "torch_loop_step_s"} for m, r in modes.items()},
        "reference": {
            "torch_loop": {m: {"step_s": r["torch_loop_step_s"]} for m, r in modes.items()},
            "peft_ln": peft,
        },
        "config": {"model": args.model, "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
                   "precision": args.precision, "grad_ckpt": args.grad_ckpt, "total_params": any_run["total"],
                   "threads": args.threads, "load_avg": os.getloadavg(),
                   "wall_s": time.perf_counter() - started},
    }
    (out / "bench.json").write_text(json.dumps(bench, indent=2) + "\n")
    (out / "bench.md").write_text(markdown(bench))
    print(markdown(bench))
    print(f"bench: wrote {out / 'bench.json'} and {out / 'bench.md'} in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
