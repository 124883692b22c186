"""Bounded reading of the YAML and JSON files that come from someone else (run dirs, datasets).

A YAML bomb (nested anchors), a 50 MB config or a ``metrics.json`` nested 100,000 deep is refused
in one line, in well under a second, before it is parsed in full:

* bytes: the file's size is checked before it is read (``max_bytes``);
* aliases: a run dir's YAML never holds one (OmegaConf writes none), so ``*alias`` is refused
  (anchors expand on every walk of the result: nine levels of ten make a billion nodes);
* nesting: deeper than ``MAX_DEPTH`` mappings/lists is refused (YAML: from the event stream, before
  anything is built; JSON: the decoder's recursion limit, then a walk of the result);
* YAML nodes: more than ``CONFIG_NODES`` is refused from the event stream (building Python objects
  from YAML is slow: a 1 MB file of 180,000 nodes takes seconds).

Errors are :class:`UnsafeFile`, a ``MedftError`` (one line from the CLI) and a ``ValueError`` (so
``medft report`` lists the run as ``unreadable``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from medft.util.errors import MedftError

MAX_DEPTH = 64
CONFIG_BYTES = 1 << 20  # a run's .hydra/*.yaml: medft writes a few KB
CONFIG_NODES = 20_000  # ... of a few hundred values; PyYAML builds ~100,000 nodes a second (20,000: ~0.2 s)
RUN_JSON_BYTES = 16 << 20  # metrics.json, status.json, candidates
DATA_BYTES = 1 << 30  # a dataset's annotation file (SLAKE's are a few MB, MIMIC-CXR's CSVs ~100 MB)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: a 1 MB file in milliseconds


class UnsafeFile(MedftError, ValueError):
    """A file too large, too deep, or using YAML aliases: refused before it is used."""


def _read(path: Path, max_bytes: int) -> str:
    size = path.stat().st_size
    if size > max_bytes:
        raise UnsafeFile(f"{path} is {size:,} bytes, over the {max_bytes:,} medft reads from such a file: refused")
    data = path.read_bytes()[: max_bytes + 1]  # a file growing while read is cut, then refused as too long
    if len(data) > max_bytes:
        raise UnsafeFile(f"{path} is over the {max_bytes:,} bytes medft reads from such a file: refused")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UnsafeFile(f"{path} is not UTF-8 text (byte {err.start}): refused") from None


def check_yaml_text(text: str, source: str, max_depth: int = MAX_DEPTH, max_nodes: int = CONFIG_NODES) -> None:
    """Refuse aliases, nesting deeper than ``max_depth`` and more than ``max_nodes`` values from YAML's
    event stream (nothing built)."""
    depth = 0
    try:
        for n, event in enumerate(yaml.parse(text, Loader=_Loader)):
            if n > max_nodes:
                raise UnsafeFile(f"{source} holds more than {max_nodes:,} YAML nodes (medft writes a few hundred): refused")
            if isinstance(event, yaml.AliasEvent):
                raise UnsafeFile(f"{source}: YAML alias *{event.anchor} is refused (medft writes none; "
                                 "anchors can expand into billions of nodes)")
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > max_depth:
                    raise UnsafeFile(f"{source}: nested deeper than {max_depth} levels: refused")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError as err:
        raise UnsafeFile(f"{source} is not valid YAML ({' '.join(str(err).split())[:160]})") from None


def load_yaml(path: str | Path, max_bytes: int = CONFIG_BYTES, max_depth: int = MAX_DEPTH,
              max_nodes: int = CONFIG_NODES) -> Any:
    """``yaml.safe_load`` of ``path`` within the limits, or a one-line :class:`UnsafeFile`."""
    path = Path(path)
    text = _read(path, max_bytes)
    check_yaml_text(text, str(path), max_depth, max_nodes)
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader (CSafeLoader / SafeLoader)
    except yaml.YAMLError as err:
        raise UnsafeFile(f"{path} is not valid YAML ({' '.join(str(err).split())[:160]})") from None


def depth_of(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of lists/dicts in ``value`` (stops counting past ``limit``), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


def loads_json(text: str, source: str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` with nesting bounded, or a one-line :class:`UnsafeFile`."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise UnsafeFile(f"{source}: nested deeper than {max_depth} levels: refused") from None
    except ValueError as err:
        raise UnsafeFile(f"{source} is not valid JSON ({' '.join(str(err).split())[:160]})") from None
    if depth_of(value, max_depth) > max_depth:
        raise UnsafeFile(f"{source}: nested deeper than {max_depth} levels: refused")
    return value


def load_json(path: str | Path, max_bytes: int = RUN_JSON_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` of ``path`` within the limits, or a one-line :class:`UnsafeFile`."""
    path = Path(path)
    return loads_json(_read(path, max_bytes), str(path), max_depth)


def read_text(path: str | Path, max_bytes: int) -> str:
    """A text file of at most ``max_bytes`` bytes, UTF-8, or a one-line :class:`UnsafeFile`."""
    return _read(Path(path), max_bytes)


ROWS_BYTES = 256 << 20  # predictions.jsonl: a generated report per row, tens of thousands of rows


def load_jsonl(path: str | Path, max_bytes: int = ROWS_BYTES, max_depth: int = MAX_DEPTH) -> list[dict[str, Any]]:
    """JSON lines, each an object, or a one-line :class:`UnsafeFile` naming the first bad line."""
    path = Path(path)
    rows = []
    for n, line in enumerate(_read(path, max_bytes).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = loads_json(line, f"{path}:{n}", max_depth)
        except UnsafeFile as err:
            raise UnsafeFile(f"{err}: the file is damaged") from None
        if not isinstance(row, dict):
            raise UnsafeFile(f"{path}:{n} is a JSON {type(row).__name__}, not an object: the file is damaged")
        rows.append(row)
    return rows
