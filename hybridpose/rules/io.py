"""The rules file (``rules.yaml``): reading with file- and line-numbered errors, writing with a header.

The header is a comment that explains the format and ends with a checksum of the YAML body
(``# checksum: sha256:<hex>``). ``calibrate`` uses it to tell its own, unedited output from a file
a person has edited: an edited file is kept as ``rules.yaml.bak`` (``.bak1``, ``.bak2``, ... if
that exists) before it is replaced. Comments are ignored when reading, so a file without the
checksum, e.g. written by hand, loads like any other. Format: ``rules/README.md``.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..atomic import write_text
from ..errors import RulesError
from .model import README_HINT, RULE_KINDS, Rule, RuleSet, tidy

CHECKSUM_TAG = "# checksum:"

_HEADER = """\
# hybridpose rules: settle confused sibling classes by one keypoint statistic each.
# A rule acts only on a photo whose two most likely classes (fused model) are
# if_high and if_low, in either order. Then, with v the photo's statistic:
#   v > threshold + margin  -> if_high
#   v < threshold - margin  -> if_low
#   otherwise, or no person -> no decision (the fused prediction stands)
# (with margin 0: v >= threshold -> if_high, else if_low.)
# support, gain, accuracy_before, accuracy_after and n_fired are the evidence
# from calibration (out-of-fold); editing them changes nothing. You may edit
# threshold and margin, delete rules, or add rules by hand: see rules/README.md.
# calibrate replaces this file; if you edited it, it first keeps your copy as <name>.bak.
"""


# --------------------------------------------------------------------------- writing


def write_rules(ruleset: RuleSet, path: str | Path) -> None:
    """Write ``ruleset`` to ``path`` atomically: header, checksum of the body, YAML body."""
    body = {"level": ruleset.level, "meta": _plain(ruleset.meta), "rules": [_rule_mapping(r) for r in ruleset.rules]}
    text = yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=120)
    write_text(path, f"{_HEADER}{CHECKSUM_TAG} {checksum(text)}\n{text}")


def checksum(body: str) -> str:
    """``sha256:<hex>`` of the YAML body (the text after the header's checksum line)."""
    return "sha256:" + hashlib.sha256(body.encode("utf-8")).hexdigest()


def is_edited(path: str | Path) -> bool:
    """True if the file at ``path`` is not as ``write_rules`` wrote it (no checksum, or the body changed)."""
    return _edited(_read_bytes(Path(path)))


def backup_if_edited(path: str | Path) -> Path | None:
    """Before ``path`` is replaced: copy it to the first free ``NAME.bak``, ``NAME.bak1``, ... if it
    was edited by hand (see ``is_edited``) and return the copy's path; None if there is nothing to keep.

    An existing backup is never overwritten.
    """
    path = Path(path)
    if not path.is_file():
        return None
    data = _read_bytes(path)
    if not _edited(data):
        return None
    n = 0
    while True:
        backup = path.with_name(f"{path.name}.bak{n or ''}")
        try:
            with open(backup, "xb") as fh:  # "x": fails if it exists, so no backup is ever overwritten
                fh.write(data)
        except FileExistsError:
            n += 1
            continue
        shutil.copystat(path, backup)  # keeps the time of the edit
        return backup


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise RulesError(
            f"{path}: cannot read it to check for hand edits ({e.strerror}); move it away, then re-run calibrate."
        ) from None


def _edited(data: bytes) -> bool:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    stored, body = _split_checksum(text)
    return stored is None or stored != checksum(body)


def _split_checksum(text: str) -> tuple[str | None, str]:
    """(checksum written in the leading comment block or None, the text after its line)."""
    offset = 0
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith(CHECKSUM_TAG):
            return stripped[len(CHECKSUM_TAG):].strip(), text[offset + len(line):]
        if stripped and not stripped.startswith("#"):
            break
        offset += len(line)
    return None, text


def _rule_mapping(rule: Rule) -> dict[str, Any]:
    d = rule.to_mapping()
    if rule.kind != "threshold":
        d = {"kind": rule.kind, **d}
    return d


def _plain(obj: Any) -> Any:
    """numpy scalars and containers -> plain Python, so safe_dump can write them."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return tidy(obj)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


# --------------------------------------------------------------------------- reading


def read_rules(path: str | Path, cls: type[RuleSet] = RuleSet) -> RuleSet:
    """Load a rules file; every problem is a RulesError naming the file (and the line where known)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise RulesError(f"{path}: cannot read rules file ({why}); check the path or re-run calibrate.") from None
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        raise RulesError(f"{_yaml_where(path, e)}: not valid YAML ({_yaml_problem(e)}); fix the syntax ({README_HINT}).") from None
    return _from_data(cls, data, path, _rule_lines(root))


def _from_data(cls: type[RuleSet], data: Any, path: Path, lines: list[int]) -> RuleSet:
    if data is None:
        raise RulesError(f"{path}: the rules file is empty; re-run calibrate or write level/meta/rules ({README_HINT}).")
    if not isinstance(data, dict):
        raise RulesError(
            f"{path}: the top level is a {_yaml_type(data)}, expected a mapping with keys level, meta, rules ({README_HINT})."
        )
    unknown = sorted(set(map(str, data)) - {"level", "meta", "rules"})
    if unknown:
        raise RulesError(f"{path}: unknown top-level key(s) {unknown}; allowed are level, meta, rules ({README_HINT}).")
    for key in ("level", "rules"):
        if key not in data:
            raise RulesError(f"{path}: missing top-level key {key!r}; add it ({README_HINT}).")
    if not isinstance(data["level"], str) or not data["level"]:
        raise RulesError(f"{path}: level must be the name of the leaf level (e.g. class), found {data['level']!r}.")
    meta = data.get("meta") or {}
    if not isinstance(meta, dict):
        raise RulesError(f"{path}: meta must be a mapping, found a {_yaml_type(meta)}.")
    items = data["rules"] or []
    if not isinstance(items, list):
        raise RulesError(f"{path}: rules must be a list of rules (each starting with '- name:'), found a {_yaml_type(items)}.")
    rules = [_rule_from(item, i, path, lines) for i, item in enumerate(items)]
    _check_unique_names(rules, path)
    return cls(rules=rules, level=data["level"], meta=meta, path=str(path))


def _rule_from(item: Any, i: int, path: Path, lines: list[int]) -> Rule:
    line = f":{lines[i]}" if i < len(lines) else ""
    label = f"rule #{i + 1}"
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        label += f" ({item['name']!r})"
    where = f"{path}{line}: {label}"
    if not isinstance(item, dict):
        raise RulesError(f"{where} is a {_yaml_type(item)}, expected a mapping of keys ({README_HINT}).")
    kind = item.get("kind", "threshold")
    if kind not in RULE_KINDS:
        raise RulesError(f"{where}: unknown kind {kind!r}; known kinds are {sorted(RULE_KINDS)}.")
    return RULE_KINDS[kind].from_mapping(item, where)


def _check_unique_names(rules: list[Rule], path: Path) -> None:
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise RulesError(f"{path}: two rules are named {rule.name!r}; give each rule its own name.")
        seen.add(rule.name)


def _yaml_type(v: Any) -> str:
    return {dict: "mapping", list: "list", str: "text"}.get(type(v), type(v).__name__)


def _yaml_where(path: Path, e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    return f"{path}:{mark.line + 1}" if mark is not None else str(path)


def _yaml_problem(e: yaml.YAMLError) -> str:
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    mark = getattr(e, "problem_mark", None)
    return f"{problem}, column {mark.column + 1}" if mark is not None else problem


def _rule_lines(root: Any) -> list[int]:
    """Line number (1-based) of each item of the top-level ``rules`` list, for messages."""
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if getattr(key, "value", None) == "rules" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []
