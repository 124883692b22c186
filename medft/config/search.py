"""Where configs are found: medft's own (``medft/configs``, package data) after the user's config dirs
(``--config-dir``, ``hydra.searchpath``, ``MEDFT_CONFIG_DIRS``), for every command that composes one."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import yaml
from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.plugins.search_path_plugin import SearchPathPlugin

from medft.runs.layout import RunDir
from medft.util.errors import ConfigError

CONFIG_DIR = Path(str(resources.files("medft") / "configs"))  # shipped as package data (pyproject.toml)


# -- where configs are found: the user's config dirs first, then medft's own ---------------------
CONFIG_DIRS_ENV = "MEDFT_CONFIG_DIRS"  # the user's config dirs (os.pathsep-separated); launcher workers inherit it


CONFIG_DIRS_FILE = RunDir.CONFIG_DIRS  # in a run dir: {"config_dirs": the user's config dirs that composed the run}


CONFIG_DIR_FLAGS = ("--config-dir", "-cd")


def user_config_dirs() -> list[Path]:
    """The user's config dirs, searched before medft's own: ``--config-dir DIR`` and ``hydra.searchpath``
    of a command line (:func:`take_config_dirs`), or ``MEDFT_CONFIG_DIRS`` set by hand."""
    return [Path(p) for p in os.environ.get(CONFIG_DIRS_ENV, "").split(os.pathsep) if p]


def config_dirs() -> list[Path]:
    """Every config dir in search order: the user's, then medft's own (CONFIG_DIR)."""
    return [*user_config_dirs(), CONFIG_DIR]


def find_config(*parts: str) -> Path | None:
    """The first ``DIR/parts...`` file in search order (a user's ``dataset/mine.yaml`` before medft's), or None."""
    return next((path for d in config_dirs() if (path := d.joinpath(*parts)).is_file()), None)


def add_config_dirs(dirs: list[Path]) -> None:
    """Put ``dirs`` on the config search path (after those already on it) for this process and its children."""
    known = user_config_dirs()
    os.environ[CONFIG_DIRS_ENV] = os.pathsep.join(str(d) for d in [*known, *(d for d in dirs if d not in known)])
    use_search_path()


def record_config_dirs(run_dir: Path) -> None:
    """Write the user's config dirs that compose this run into it (``eval``/``export``/``ask`` search them again)."""
    from medft.util.files import write_json_atomic

    write_json_atomic(RunDir(run_dir).config_dirs, {"config_dirs": [str(d) for d in user_config_dirs()]})


def _searchpath_dirs(value: str) -> tuple[list[str], bool]:
    """The directories of a ``hydra.searchpath=[file://A,B]`` value, and whether it names anything else (pkg://)."""
    entries = [e.strip().strip("'\"") for e in value.strip().strip("[]").split(",") if e.strip()]
    dirs = [e.removeprefix("file://") for e in entries if "://" not in e.removeprefix("file://")]
    return dirs, len(dirs) < len(entries)


def take_config_dirs(args: list[str], config_name: str = "train") -> list[str]:
    """Take the user's config dirs out of a command line, in any position: ``--config-dir DIR``,
    ``--config-dir=DIR`` or ``-cd DIR`` (repeatable) and ``hydra.searchpath=[file://DIR,...]``, plus the
    ``hydra.searchpath`` of a ``CONFIG_NAME.yaml`` in one of those dirs. They are searched before medft's
    own configs by every compose that follows (Hydra's, and medft's own look-ups); returns the rest."""
    found: list[str] = []
    rest: list[str] = []
    items = iter(args)
    for arg in items:
        flag, eq, value = arg.partition("=")
        if flag in CONFIG_DIR_FLAGS:
            value = value if eq else next(items, "")
            if not value or value.startswith("-"):
                raise ConfigError(f"{flag} needs a directory: {flag} DIR (your model, dataset, ... configs)")
            found.append(value)
        elif flag.lstrip("+") == "hydra.searchpath" and eq:
            dirs, others = _searchpath_dirs(value)
            found.extend(dirs)
            if others:  # pkg://... : Hydra's own search path handles it
                rest.append(arg)
        else:
            rest.append(arg)
    dirs: list[Path] = []
    for value in found:
        path = Path(value).expanduser().resolve()
        if not path.is_dir():
            raise ConfigError(f"--config-dir {value}: no such directory (give the folder holding your model/, dataset/, ... configs)")
        dirs.append(path)
        primary = path / f"{config_name}.yaml"
        searchpath = (yaml.safe_load(primary.read_text()) or {}).get("hydra", {}).get("searchpath") if primary.is_file() else None
        for entry in searchpath or []:
            extra = Path(str(entry).removeprefix("file://")).expanduser().resolve()
            if "://" not in str(entry).removeprefix("file://") and extra.is_dir():
                dirs.append(extra)
    if dirs:
        add_config_dirs(dirs)
    return rest


def use_search_path() -> None:
    """Register medft's Hydra search-path plugin once: the user's config dirs come before medft's."""
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()
    if UserConfigDirs.__name__ not in {c.__name__ for c in plugins.discover(SearchPathPlugin)}:
        plugins.register(UserConfigDirs)


class UserConfigDirs(SearchPathPlugin):
    """Hydra's search path of a medft config (its main dir is CONFIG_DIR) gets the user's config dirs
    before medft's own, in order; Hydra's ``--config-dir`` alone would come after them."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        main = SearchPathQuery(provider="main")
        found = [e.path for e in search_path.get_path() if e.provider == main.provider]
        if not found or found[0].removeprefix("file://") != str(CONFIG_DIR):  # another Hydra app in this process
            return
        for path in user_config_dirs():
            search_path.prepend(provider="medft-config-dir", path=f"file://{path}", anchor=main)


def available(group: str) -> list[str]:
    """The choices of a config group in every config dir, e.g. ``available("tune")`` -> ["attention", "bitfit", ...]."""
    return sorted({p.stem for d in config_dirs() for p in (d / group).glob("*.yaml")})


def group_dirs() -> set[str]:
    """The config groups of every config dir, nested ones too (``model/arch``)."""
    return {str(p.relative_to(d)) for d in config_dirs() for p in d.rglob("*") if p.is_dir()}


def root_config(config_name: str) -> Path:
    return find_config(f"{config_name}.yaml") or CONFIG_DIR / f"{config_name}.yaml"


def generation_config() -> Path:
    return find_config("generation", "default.yaml") or CONFIG_DIR / "generation" / "default.yaml"


def default_groups(config_name: str = "train") -> set[str]:
    """Config groups named in the root config's defaults list (their ``+group=`` is rewritten)."""
    defaults = yaml.safe_load(root_config(config_name).read_text())["defaults"]
    return {next(iter(d)) for d in defaults if isinstance(d, dict)}
