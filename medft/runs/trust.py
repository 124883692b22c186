"""Run directories as data: what medft reads back from a run dir, and who may write into one.

A run dir (``.hydra/config.yaml``, ``.hydra/overrides.yaml``, checkpoints) may come from someone
else: a colleague's cluster, a paper's download. Nothing in it is instantiated or imported as
given:

* :func:`trusted_model_config` — the run's ``model`` node selects one of medft's own model configs
  (``configs/model/<name>.yaml``) by its name and brings only plain values for that config's keys;
  the ``_target_`` that runs is always medft's own. Any other ``_target_`` (or ``_args_``,
  ``_partial_``, ...) is refused in one line.
* :func:`trusted_tune_config` — the same for the ``tune`` node and ``configs/tune/<name>.yaml``.
* :func:`parse_run_overrides` — the one parser of ``.hydra/overrides.yaml`` (resume, resume=auto,
  eval, rescore, export, ask, report): each entry is ``key=value`` under medft's config tree or
  ``group=option`` naming a file of medft's config group; no flag, ``@package``, path, ``hydra.*``,
  interpolation, instantiation key or sweep.
* :func:`read_run_config` — ``.hydra/config.yaml`` as data: bounded (medft.util.safe_load), its overrides
  parsed, resolvers other than oc.select / medft_lr / medft_mul refused in ``model`` / ``tune`` and
  left as text elsewhere (``${oc.env:X}`` is never read, ``${medft_claim:DIR}`` never creates DIR).
* :class:`RunLock` — one process at a time writes into a run dir (``.medft.lock`` with the
  holder's host and pid; a stale lock of a dead process is taken over, and said so).
* :func:`claim_dir` — ``${medft_claim:PATH}`` (configs/hydra/default.yaml) creates PATH with
  ``os.mkdir`` (atomic: of two runs started in the same second exactly one gets PATH) and, when it
  exists, ``PATH_2``, ``PATH_3``... The claim is remembered in the environment, so Hydra resolving
  the same path again, and launcher workers started afterwards, get the same directory.
* :class:`SweepStatus` — a Hydra callback: after a multirun it counts the jobs that left an
  ``error.txt`` (and no ``metrics.json``), so ``medft train -m`` can exit non-zero.
* ``status.json`` (:func:`write_status`, :func:`read_status`) — a run dir's one current state, kept
  by ``medft train`` and read by ``medft report``: ``running`` (written when the job starts),
  ``preempted`` (a signal stopped it after saving checkpoints/last.ckpt: medft.runs.preempt), ``failed``
  (its last attempt raised: error.txt holds why) or ``ok`` (metrics.json is written; earlier
  versions wrote ``finished``, read as ``ok``). Each comes with the time, host and pid,
  and the step where known. :func:`run_state` reads a run's state from error.txt, metrics.json and
  status.json, in that order. The names of these files: :class:`medft.runs.layout.RunDir`; the
  state words: :class:`medft.runs.layout.Status`.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from medft.config.search import available, config_dirs, find_config, group_dirs
from medft.runs.layout import PLACEHOLDER, WRITTEN, RunDir, Status
from medft.util.errors import ConfigError, MedftError

# Hydra's instantiation keys: a run dir may never bring one.
RESERVED = ("_target_", "_args_", "_partial_", "_recursive_", "_convert_")
_DATA_ONLY = "a run dir brings data only, never code"
PLAIN = (str, int, float, bool, type(None))
# transformers' built-in attention kernels (anything else names a hub repository of code)
ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")


class RunDirError(MedftError):
    """A run dir holds something medft refuses to use (code, a corrupt file, another process's lock)."""


class RunInUse(RunDirError):
    """Another live process holds the run dir's lock: nothing may be written there."""


def _check_plain(value: Any, key: str, source: str) -> None:
    """No Hydra instantiation key anywhere in ``value``; every leaf a plain value."""
    if isinstance(value, dict):
        for k, v in value.items():
            if str(k) in RESERVED:
                raise RunDirError(f"{source}: {key}.{k}={v!r} is refused: {_DATA_ONLY}")
            _check_plain(v, f"{key}.{k}", source)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{key}[{i}]", source)
    elif not isinstance(value, PLAIN):
        raise RunDirError(f"{source}: {key} holds a {type(value).__name__}, not a plain value: {_DATA_ONLY}")


def _own_config(group: str, name: Any, source: str) -> dict[str, Any]:
    """medft's own ``configs/<group>/<name>.yaml`` (unresolved), or a one-line refusal."""
    names = available(group)
    if not isinstance(name, str) or name not in names:
        raise RunDirError(
            f"{source}: {group}.name={name!r} is not one of medft's own {group} configs ({', '.join(names)}); "
            f"{_DATA_ONLY} (a {group} config of your own: give its folder with --config-dir DIR)"
        )
    if group == "model":  # with its defaults: the family's arch (configs/model/arch/), a parent model config
        from medft.models.base import model_config

        return model_config(name)
    return yaml.safe_load(find_config(group, f"{name}.yaml").read_text()) or {}


def _check_schema(node: dict[str, Any], own: dict[str, Any], group: str, source: str) -> None:
    """``node``'s keys are keys of medft's own config, each of the same kind (scalar, list, mapping)."""
    for key, value in node.items():
        if key not in own:
            raise RunDirError(
                f"{source}: {group}.{key} is not a key of medft's {group} config {own.get('name')} "
                f"(configs/{group}/{own.get('name')}.yaml); {_DATA_ONLY}"
            )
        default = own[key]
        for kind, label in ((dict, "a mapping"), (list, "a list")):
            if isinstance(default, kind) != isinstance(value, kind) and default is not None and value is not None:
                raise RunDirError(
                    f"{source}: {group}.{key}={value!r} should be {label if isinstance(default, kind) else 'a plain value'} "
                    f"as in configs/{group}/{own.get('name')}.yaml"
                )


def trusted_model_config(node: Any, source: str) -> dict[str, Any]:
    """A run's resolved ``model`` node as a builder config whose ``_target_`` is medft's own.

    ``node`` (from a run dir) names the model; its other keys must be keys of medft's own config of
    that name and hold plain values. The returned dict is what :func:`medft.models.build_model` takes.
    """
    if not isinstance(node, dict):
        raise RunDirError(f"{source}: model is not a mapping: is it a medft train run?")
    from medft.models.base import FORMER_TARGETS, TASKS

    target = FORMER_TARGETS.get(node.get("_target_"), node.get("_target_"))  # runs from before a rename
    own = _own_config("model", node.get("name"), source) if node.get("name") in available("model") else {}
    if target is not None and target != own.get("_target_"):
        built_by = (f"model {node['name']} is built by {own['_target_']}" if own
                    else "it names no model config of medft's, nor of a --config-dir DIR given")
        raise RunDirError(f"{source}: model._target_={target!r} is not medft's own ({built_by}): refused, {_DATA_ONLY}")
    own = own or _own_config("model", node.get("name"), source)
    plain = {k: v for k, v in node.items() if k != "_target_"}
    _check_plain(plain, "model", source)
    _check_schema(plain, own, "model", source)
    attn = plain.get("attn_implementation")
    if attn is not None and attn not in ATTENTION:  # a hub kernel repo name would fetch and run its code
        raise RunDirError(
            f"{source}: model.attn_implementation={attn!r} is refused: a run dir may pick one of {', '.join(ATTENTION)}"
        )
    if plain.get("trust_remote_code"):
        raise RunDirError(
            f"{source}: model.trust_remote_code=true is refused: a run dir cannot switch on code from a model "
            "repository; train or evaluate from your own config"
        )
    if "task" not in plain and own.get("task") in TASKS:  # runs from before every model config stated its task
        plain["task"] = own["task"]
    return {"_target_": own["_target_"], **plain}


def trusted_tune_config(node: Any, source: str) -> dict[str, Any]:
    """A run's resolved ``tune`` node checked against medft's own tune config of that name."""
    if not isinstance(node, dict):
        raise RunDirError(f"{source}: tune is not a mapping: is it a medft train run?")
    own = _own_config("tune", node.get("name"), source)
    _check_plain(node, "tune", source)
    _check_schema(node, own, "tune", source)
    if node.get("select", own.get("select")) != own.get("select"):
        raise RunDirError(
            f"{source}: tune.select={node.get('select')!r} is not what tune {node['name']} selects "
            f"({own.get('select')!r}, configs/tune/{node['name']}.yaml)"
        )
    return dict(node)


# -- resume: the run's own command line, replayed ----------------------------------------------
# What one entry of .hydra/overrides.yaml may be: [+|++|~]key=value, key a dotted path of plain
# names (or a config group path such as model/arch). No flags (--cfg, -m, --experimental-rerun,
# --config-dir), no @package, no paths as group choices, no interpolation.
_OVERRIDE = re.compile(r"(?P<prefix>\+\+|\+|~)?(?P<key>[A-Za-z_][A-Za-z0-9_-]*(?:[./][A-Za-z_][A-Za-z0-9_-]*)*)(?P<sep>=?)(?P<value>.*)", re.S)
_CHOICE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")
MAX_OVERRIDES = 1000


def config_roots() -> set[str]:
    """The top-level names of medft's config tree: its config groups and the keys of its root configs."""
    roots = {p.name for d in config_dirs() if d.is_dir() for p in d.iterdir() if p.is_dir()}
    for path in (p for d in config_dirs() for p in d.glob("*.yaml")):
        root = yaml.safe_load(path.read_text()) or {}
        roots |= {str(k) for k in root}
        roots |= {str(next(iter(d))).partition("@")[2] for d in root.get("defaults") or [] if isinstance(d, dict)}
    return roots - {"hydra", "defaults", ""}


def parse_run_overrides(overrides: Any, path: Path | str) -> list[str]:
    """A run dir's ``.hydra/overrides.yaml`` as a list of overrides medft allows, or a one-line refusal.

    Each entry is ``key=value`` for a key under one of medft's config roots (:func:`config_roots`),
    or ``group=option`` for an option that is a file of medft's config group; nothing else (a flag, an
    ``@package``, a path, an interpolation, a ``hydra.*`` setting, a Hydra instantiation key, a sweep)."""
    from medft.config.overrides import is_sweep

    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        kind = type(overrides).__name__
        raise RunDirError(
            f"{path} is not a list of overrides (found a {kind}): it is damaged or not written by medft train; "
            f"restore it, or start a new run with ckpt_path={PLACEHOLDER.last_ckpt}"
        )
    if len(overrides) > MAX_OVERRIDES:
        raise RunDirError(f"{path} holds {len(overrides)} overrides (medft takes at most {MAX_OVERRIDES}): refused")
    groups, roots = group_dirs(), config_roots()

    def refuse(override: str, why: str) -> RunDirError:
        shown = override if len(override) <= 80 else override[:77] + "..."
        return RunDirError(f"{path}: {shown!r} {why}: refused, {_DATA_ONLY} (if that run is your own, give the "
                           "override again after resume=)")

    for override in overrides:
        match = _OVERRIDE.fullmatch(override)
        if match is None or "\n" in override:
            raise refuse(override, "is not a key=value override of medft's config (a flag, an @package or a path)")
        key, value = match["key"], match["value"]
        if not match["sep"] and (match["prefix"] != "~" or value):
            raise refuse(override, "is not a key=value override of medft's config")
        parts = re.split(r"[./]", key)
        if parts[0] == "hydra":
            raise refuse(override, "holds a hydra setting")
        bad = next((p for p in parts if p in RESERVED), None) or next((r for r in RESERVED if r in value), None)
        if bad:
            raise refuse(override, f"holds {bad}")
        if "${" in value:
            raise refuse(override, "holds an interpolation")
        if parts[0] not in roots:
            raise refuse(override, f"names {parts[0]!r}, which is not in medft's config tree")
        if "/" in key and key not in groups:
            raise refuse(override, f"names no config group of medft ({key})")
        if key in groups and match["sep"] and value not in ("null", ""):
            if not _CHOICE.fullmatch(value) or ".." in value or not find_config(*key.split("/"), f"{value}.yaml"):
                raise refuse(override, f"does not name one of medft's own {key} configs ({', '.join(available(key))})")
        elif is_sweep(value):
            raise refuse(override, "is a sweep, not one value")
    return overrides


def read_run_overrides(run_dir: Path) -> list[str]:
    """A run dir's ``.hydra/overrides.yaml``, bounded (medft.util.safe_load) and parsed (:func:`parse_run_overrides`)."""
    from medft.util.safe_load import load_yaml

    path = RunDir(run_dir).overrides
    try:
        items = load_yaml(path)
    except OSError as err:
        raise RunDirError(f"{path} cannot be read ({err.strerror or err}): restore it, or start a new run "
                          f"with ckpt_path={PLACEHOLDER.last_ckpt}") from None
    return parse_run_overrides([] if items is None else items, path)


check_replayed_overrides = parse_run_overrides  # the name of before


# -- one writer per run dir ------------------------------------------------------------------


def is_rank_zero() -> bool:
    """False in the extra processes of a multi-device run (they share the run dir with rank 0)."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "NODE_RANK"))


def _alive(host: str, pid: int) -> bool:
    if host != socket.gethostname():
        return True  # another machine's process: cannot tell, so it holds the lock
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_held(run_dir: Path) -> bool:
    """Whether a live process holds ``run_dir``'s lock (a stale lock of a dead process on this host: no)."""
    holder = RunLock(run_dir)._holder()
    if holder is None:
        return RunDir(run_dir).lock.is_file()  # being written, or damaged: treated as held
    return _alive(holder["host"], holder["pid"])


class RunLock:
    """An exclusive lock file in a run dir, holding ``{"host", "pid"}`` of the process that writes it.

    ``acquire`` creates it with O_EXCL; a lock left by a dead process on this host is taken over
    (and said so on stderr); a live holder is a one-line RunDirError before anything is written.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = RunDir(run_dir).lock
        self.held = False

    def acquire(self) -> "RunLock":
        if not is_rank_zero():
            return self
        me = json.dumps({"host": socket.gethostname(), "pid": os.getpid()})
        for _ in range(2):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and holder["pid"] == os.getpid() and holder["host"] == socket.gethostname():
                    return self  # this process holds it already (medft train resume=: main, then the task)
                if holder is None or _alive(holder["host"], holder["pid"]):
                    who = f"process {holder['pid']} on {holder['host']}" if holder else "another process"
                    raise RunInUse(
                        f"run dir {self.path.parent} is in use by {who} ({self.path}): wait for it to finish, "
                        "or delete the lock file if that process is gone"
                    ) from None
                print(
                    f"taking over the stale lock {self.path} of process {holder['pid']} on {holder['host']} (no longer running)",
                    file=sys.stderr,
                )
                self.path.unlink(missing_ok=True)
                continue
            except OSError as err:
                raise RunDirError(
                    f"run dir {self.path.parent} cannot be written ({err.strerror or err}): make it writable, "
                    "or work on a copy of it"
                ) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(me + "\n")
            self.held = True
            return self
        raise RunDirError(f"run dir {self.path.parent}: could not take the lock {self.path}; try again")

    def _holder(self) -> dict[str, Any] | None:
        try:
            holder = json.loads(self.path.read_bytes()[:4096])
            return {"host": str(holder["host"]), "pid": int(holder["pid"])}
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return None  # being written, or damaged: treated as held

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


# -- a run's config: data, never resolved through a resolver that reads or writes outside it ------
# The resolvers a run's config may use when medft resolves its model / tune node: lookups inside the
# config (oc.select) and medft's own arithmetic. ${oc.env:...}, ${medft_claim:...}, ${oc.decode:...},
# ${hydra:...} and any other resolver are left literal (defused) and refused where medft needs the value.
SAFE_RESOLVERS = ("oc.select", "medft_lr", "medft_mul")
_RESOLVER = re.compile(r"\$\{\s*([^\s:{}]+)\s*:")
DEFUSED = "$\\{"  # what "${" of an unsafe interpolation becomes: plain text to OmegaConf


def unsafe_resolvers(text: str) -> list[str]:
    """The resolvers other than :data:`SAFE_RESOLVERS` that ``text`` calls (``${oc.env:X}`` -> ["oc.env"])."""
    return [name for name in _RESOLVER.findall(text) if name not in SAFE_RESOLVERS] if "${" in text else []


def defuse(value: Any) -> Any:
    """A copy of ``value`` whose strings calling an unsafe resolver are plain text (``$\\{oc.env:X}``)."""
    if isinstance(value, dict):
        return {k: defuse(v) for k, v in value.items()}
    if isinstance(value, list):
        return [defuse(v) for v in value]
    if isinstance(value, str) and unsafe_resolvers(value):
        return value.replace("${", DEFUSED)
    return value


def check_resolvers(node: Any, key: str, source: str) -> None:
    """No string under ``node`` (a run's model or tune, which medft resolves) calls an unsafe resolver."""
    if isinstance(node, dict):
        for k, v in node.items():
            check_resolvers(v, f"{key}.{k}", source)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            check_resolvers(v, f"{key}[{i}]", source)
    elif isinstance(node, str) and (names := unsafe_resolvers(node)):
        raise RunDirError(f"{source}: {key} calls ${{{names[0]}:...}}: refused, a run dir brings plain values "
                          f"(only {', '.join(SAFE_RESOLVERS)} and references to its own keys are resolved)")


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """A run's ``.hydra/config.yaml`` as plain data, or a one-line error: read within medft.util.safe_load's
    limits, its ``.hydra/overrides.yaml`` parsed (:func:`parse_run_overrides`), its ``model`` and
    ``tune`` free of unsafe resolvers, every other unsafe interpolation defused. Never instantiated."""
    from medft.util.safe_load import UnsafeFile, load_yaml

    run = RunDir(run_dir)
    path = run.config
    try:
        cfg = load_yaml(path)
    except OSError as err:
        raise RunDirError(f"{path} cannot be read ({err.strerror or err}): the run dir is damaged") from None
    except UnsafeFile as err:
        raise RunDirError(f"{err}: the run dir is damaged or not written by medft") from None
    if not isinstance(cfg, dict):
        raise RunDirError(f"{path} is not a mapping: the run dir is damaged or not written by medft train")
    if run.overrides.is_file():
        read_run_overrides(run_dir)
    for key in ("model", "tune"):
        check_resolvers(cfg.get(key), key, str(path))
    return defuse(cfg)


# -- run dirs never shared, and a sweep's exit status -------------------------------------------
CLAIMS_ENV = "MEDFT_CLAIMED_DIRS"


def claim_dir(path: str) -> str:
    """A directory for this run only: ``path`` if this call created it, else the first free ``path_N``."""
    claims = json.loads(os.environ.get(CLAIMS_ENV) or "{}")
    if path in claims:
        return claims[path]
    base = Path(path)
    n = 1
    while True:
        candidate = base if n == 1 else base.with_name(f"{base.name}_{n}")
        try:
            base.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(candidate)
            break
        except FileExistsError:
            n += 1
        except OSError as err:  # a read-only disk, a file in the way, no permission: one line, not Hydra's traceback
            raise RunDirError(
                f"run dir {candidate} cannot be created ({err.strerror or err}): point MEDFT_LOG_DIR (paths.log_dir) "
                "or hydra.run.dir at a writable folder"
            ) from None
    claims[path] = str(candidate)
    os.environ[CLAIMS_ENV] = json.dumps(claims)
    return str(candidate)


class SweepStatus(Callback):
    """After a multirun: which jobs failed (read from the sweep dir, so every launcher is covered)."""

    failed: list[Path] = []
    jobs: int = 0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SweepStatus.failed, SweepStatus.jobs = [], 0
        if "optuna" in str(config.hydra.get("sweeper", {}).get("_target_", "")).lower():
            import logging

            import optuna  # its coloured "A new study created" line repeats the sweeper's "Study name"

            optuna.logging.set_verbosity(logging.WARNING)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(str(config.hydra.sweep.dir))
        runs = sorted(RunDir.find(root), key=lambda r: r.path) if root.is_dir() else []
        SweepStatus.jobs = len(runs)
        SweepStatus.failed = [r.path for r in runs if r.has_error() and not r.has_metrics()]
        SweepStatus.root = root


def sweep_failures() -> tuple[list[Path], int, Path | None]:
    """(failed job dirs, jobs, sweep dir) of the last multirun in this process."""
    return SweepStatus.failed, SweepStatus.jobs, getattr(SweepStatus, "root", None)


# -- status.json and error.txt: a run's one current state -------------------------------------
EXIT_PREEMPTED = 3  # medft train's exit status when a signal stopped the run after saving it


def write_status(run_dir: str | Path, state: Status, **fields: Any) -> None:
    """Write ``status.json`` (rank zero only): ``{"state", **fields, "time", "host", "pid"}``."""
    from medft.util.files import write_json_atomic

    if state not in WRITTEN:
        raise ValueError(f"status {state!r}: one of {', '.join(WRITTEN)}")
    if not is_rank_zero():
        return
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json_atomic(RunDir(run_dir).status,
                      {"state": Status(state).value, **fields, "time": stamp, "host": socket.gethostname(), "pid": os.getpid()})


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """``status.json`` as a dict ({} when missing or damaged: the run dir predates it, or was cut short);
    its ``state`` a :class:`~medft.runs.layout.Status` (an earlier version's ``finished`` reads as ``ok``)."""
    from medft.util.safe_load import load_json

    try:
        status = load_json(RunDir(run_dir).status, max_bytes=1 << 20)
    except (OSError, ValueError):  # medft.util.safe_load.UnsafeFile is a ValueError
        return {}
    state = Status.read(status.get("state")) if isinstance(status, dict) else None
    return {**status, "state": state} if state is not None else {}


def run_state(run_dir: Path) -> Status:
    """``failed`` (error.txt: the last attempt failed), ``ok`` (metrics.json), else what status.json
    says (``preempted``: stopped by a signal after saving; ``running``: started, not ended, maybe
    killed) or ``incomplete`` (a run dir from before status.json)."""
    run = RunDir(run_dir)
    if run.error.exists():
        return Status.FAILED
    if run.metrics.exists():
        return Status.OK
    state = read_status(run_dir).get("state")
    return state if state in (Status.RUNNING, Status.PREEMPTED) else Status.INCOMPLETE


__all__ = [
    "CLAIMS_ENV", "ConfigError", "EXIT_PREEMPTED", "RunDirError", "RunLock", "SweepStatus", "check_replayed_overrides",
    "claim_dir", "defuse", "lock_held", "parse_run_overrides", "read_run_config", "read_run_overrides", "read_status",
    "run_state", "sweep_failures", "trusted_model_config", "trusted_tune_config", "write_status",
]
