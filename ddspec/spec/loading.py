"""Load a spec from YAML, a dict or a Problem; apply ``--set a.b.c=value`` overrides; turn
pydantic's errors into :class:`~ddspec.errors.SpecError` findings that name the spec path and a fix."""

from __future__ import annotations

import copy
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ddspec.errors import Finding, SpecError


def load(source: str | Path | Mapping[str, Any] | BaseModel, overrides: Sequence[str] = (),
         base_dir: str | Path | None = None) -> Any:
    """Return a validated :class:`~ddspec.spec.problem.Problem`.

    ``source`` is a path to a YAML file, a mapping, or a Problem (re-validated). File paths inside the
    spec are kept as written; a relative one is resolved when used, against ``base_dir``: by default the
    YAML file's folder (a Problem's: the one it was loaded with; a mapping's: the current directory), and
    for the ``spec.yaml`` of a run folder the folder of the spec it was run from (:func:`run_base_dir`).
    ``overrides`` are ``dotted.path=value`` strings, the value parsed as YAML, applied before validation.
    """
    from ddspec.spec.base import base_dir_of

    if isinstance(source, BaseModel):
        raw: Any = source.model_dump(mode="json")
        base_dir = base_dir or base_dir_of(source)
    elif isinstance(source, Mapping):
        raw = copy.deepcopy(dict(source))  # overrides must not change the caller's mapping
    else:
        path = Path(source)
        raw, base_dir = read_yaml(path), base_dir or run_base_dir(path) or path.resolve().parent
    if not isinstance(raw, dict):
        raise SpecError.one("SPEC_NOT_MAPPING", "", f"the spec must be a mapping of sections, got {type(raw).__name__}",
                            "start from examples/quickstart.yaml")
    for item in overrides:
        apply_override(raw, item)
    return validate(raw, base_dir)


#: The files of a run folder (``ddspec.runtime.artifacts``) that tell it apart from a folder of specs.
RUN_SPEC, RUN_PLAN = "spec.yaml", "plan.json"


def run_base_dir(path: Path) -> Path | None:
    """For the ``spec.yaml`` of a run folder, whose ``plan.json`` records ``base_dir`` (the folder relative data
    paths were resolved against, relative to the run folder): that folder, resolved. None for any other file,
    or when ``plan.json`` cannot be read (the spec's own folder applies then)."""
    import json

    plan = path.parent / RUN_PLAN
    if path.name != RUN_SPEC or not plan.is_file():
        return None
    try:
        base = json.loads(plan.read_text(encoding="utf-8")).get("base_dir")
    except (OSError, ValueError, AttributeError):
        return None
    return (path.parent / base).resolve() if isinstance(base, str) else None


def read_yaml(path: Path) -> Any:
    """Parse a YAML file safely; missing files and syntax errors become SpecError."""
    if not path.is_file():
        raise SpecError.one("SPEC_NOT_FOUND", "", f"spec file not found: {path}", "check the path")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError.one("YAML_SYNTAX", where, f"YAML syntax error: {problem}",
                            "fix the indentation or quoting at that line") from None


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``raw[a][b][c] = yaml(value)`` for ``item = "a.b.c=value"`` (list indices allowed)."""
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise SpecError.one("BAD_OVERRIDE", key, f"cannot parse override {item!r}", "write --set section.field=value")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise SpecError.one("BAD_OVERRIDE", key, f"the value {text!r} is not valid YAML",
                            "quote strings with special characters") from None
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        nxt = _child(node, part, key)
        if nxt is None:
            nxt = {}
            _set(node, part, nxt, ".".join(parts[: depth + 1]))
        node = nxt
    _set(node, parts[-1], value, key)


def _child(node: Any, part: str, key: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, key)]
    if isinstance(node, dict):
        return node.get(part)
    raise SpecError.one("BAD_OVERRIDE", key, f"`{part}` is inside a value that is not a section",
                        "override the enclosing section instead")


def _set(node: Any, part: str, value: Any, key: str) -> None:
    if isinstance(node, list):
        node[_index(node, part, key)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise SpecError.one("BAD_OVERRIDE", key, "cannot set a field inside a scalar value", "override the section")


def _index(node: list, part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise SpecError.one("BAD_OVERRIDE", key, f"`{part}` is not an index of a list of {len(node)} items",
                            f"use 0..{len(node) - 1}, or override the whole list")
    return int(part)


def validate(raw: dict[str, Any], base_dir: str | Path | None = None) -> Any:
    """Validate ``raw`` as a Problem (the model of the current registries); all errors at once as one SpecError."""
    from ddspec.spec.problem import problem_model

    problem = problem_model()
    try:
        return problem.model_validate(raw, context={"base_dir": base_dir} if base_dir else None)
    except ValidationError as exc:
        raise SpecError([_finding(err, raw, problem) for err in exc.errors()]) from None


# -- pydantic error → finding -------------------------------------------------------------------

def _finding(err: Mapping[str, Any], raw: Any, root: type[BaseModel]) -> Finding:
    segments, model, annotation = _walk(err["loc"], raw, root)
    path = ".".join(str(s) for s in segments)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    message = err["msg"].removeprefix("Value error, ")
    name = str(segments[-1]) if segments else ""
    allowed = sorted(model.model_fields) if model is not None else []
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f"did you mean `{close[0]}`? " if close else ""
        return Finding("UNKNOWN_KEY", path, f"unknown key `{name}`",
                       f"{hint}allowed keys here: {', '.join(allowed)}" if allowed else "remove it")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = ", ".join(_tags(annotation)) or str(ctx.get("expected_tags", "")).replace("'", "")
        got = ctx.get("tag")
        text = f"unknown kind {got!r}" if kind == "union_tag_invalid" else "missing `kind`"
        return Finding("UNKNOWN_KIND", f"{path}.kind" if path else "kind", text, f"choose one of: {tags}")
    if kind == "missing":
        return Finding("MISSING_KEY", path, f"required key `{name}` is missing", f"add `{name}: ...` to the spec")
    if kind == "literal_error":
        return Finding("BAD_VALUE", path, f"{message} (got {err.get('input')!r})",
                       f"use one of: {ctx.get('expected', '')}".replace("'", ""))
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = " and ".join(f"{_OPS[k]} {v}" for k, v in ctx.items() if k in _OPS)
        return Finding("OUT_OF_RANGE", path, f"{message} (got {err.get('input')!r})", f"use a value {bound}")
    if kind.endswith(("_type", "_parsing")) or kind in ("too_short", "too_long"):
        return Finding("BAD_TYPE", path, f"{message} (got {err.get('input')!r})",
                       "see `ddspec schema` or docs/spec-reference.md for this field's type")
    section = str(segments[0]) if segments else ""
    return Finding("INVALID", path, message, f"see the `{section}` section in docs/spec-reference.md")


_OPS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}


def _tags(annotation: Any) -> list[str]:
    """The ``kind`` tags of the models in a (discriminated) union annotation."""
    tags = []
    for arg in _flatten(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel) and "kind" in arg.model_fields:
            tags.append(str(arg.model_fields["kind"].default))
    return tags


def _walk(loc: Sequence[Any], raw: Any, root: type[BaseModel]) -> tuple[list[Any], type[BaseModel] | None, Any]:
    """Map pydantic's ``loc`` to the user's path (dropping union tags); return it, the model holding
    its last key, and the annotation of the value at the path."""
    segments: list[Any] = []
    node: Any = raw
    annotation: Any = root
    model: type[BaseModel] | None = root
    for part in loc:
        if isinstance(node, Mapping) and part not in node and node.get("kind") == part:
            annotation = _pick(annotation, part)
            continue  # a discriminated-union tag, not a key the user wrote
        if isinstance(part, str) and part.startswith(("function-", "list[")):
            continue
        model = _as_model(annotation)
        segments.append(part)
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
        annotation = _field_type(annotation, part)
    return segments, model, annotation


def _as_model(annotation: Any) -> type[BaseModel] | None:
    for arg in _flatten(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _flatten(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _flatten(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _flatten(arg)]
    return [annotation]


def _pick(annotation: Any, tag: str) -> Any:
    for arg in _flatten(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            field = arg.model_fields.get("kind")
            if field is not None and field.default == tag:
                return arg
    return annotation


def _field_type(annotation: Any, part: Any) -> Any:
    if isinstance(part, int):
        for arg in _flatten(annotation):
            if typing.get_origin(arg) is list:
                return typing.get_args(arg)[0]
        return None
    model = _as_model(annotation)
    if model is None or part not in model.model_fields:
        return None
    return model.model_fields[part].annotation
