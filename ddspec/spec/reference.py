"""Generate ``docs/spec-reference.md`` from the spec models (a test keeps the file in sync)."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ddspec.spec.loading import _flatten


def _models(annotation: Any) -> list[type[BaseModel]]:
    found = []
    for arg in _flatten(annotation):
        if typing.get_origin(arg) is list:
            found += _models(typing.get_args(arg)[0])
        elif isinstance(arg, type) and issubclass(arg, BaseModel):
            found.append(arg)
    return found


def _type_name(annotation: Any) -> str:
    """A short, readable rendering of a field's type."""
    flat = _flatten(annotation)
    optional = " or null" if type(None) in flat else ""
    if _models(annotation):
        is_list = any(typing.get_origin(a) is list for a in flat)
        return ("list of sections" if is_list else "section") + optional
    names = []
    for arg in (a for a in flat if a is not type(None)):
        if typing.get_origin(arg) is typing.Literal:
            names.append(" / ".join(f"`{v}`" for v in typing.get_args(arg)))
        elif typing.get_origin(arg) is list:
            names.append(f"list of {_type_name(typing.get_args(arg)[0])}")
        else:
            names.append(getattr(arg, "__name__", str(arg)))
    return " or ".join(names) + optional


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return f"`{value.kind}`" if "kind" in type(value).model_fields else "(section defaults)"
    return f"`{value!r}`"


def _table(model: type[BaseModel]) -> list[str]:
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {desc} |")
    return rows


def reference_markdown() -> str:
    """The spec reference: every section, every kind (plugins' included), every field with its default."""
    from ddspec.spec.problem import problem_model

    problem = problem_model()
    out = [
        "# Spec reference",
        "",
        "Generated from the spec models by `python -m ddspec.spec.reference > docs/spec-reference.md`;",
        "do not edit by hand. The same information is in `schemas/ddspec.schema.json` (`ddspec schema`).",
        "",
        "## Top level",
        "",
        *_table(problem),
    ]
    seen: set[type[BaseModel]] = {problem}
    for name, field in problem.model_fields.items():
        models = [m for m in _models(field.annotation) if m not in seen]
        if not models:
            continue
        out += ["", f"## `{name}`", ""]
        for model in models:
            seen.add(model)
            tag = model.model_fields.get("kind")
            title = f"`kind: {tag.default}`" if tag is not None else model.__name__
            doc = " ".join((model.__doc__ or "").split())
            out += [f"### {title}", "", doc, "", *_table(model), ""]
            for sub in _nested(model, seen):
                sub_tag = sub.model_fields.get("kind")
                sub_title = f"`kind: {sub_tag.default}`" if sub_tag is not None else sub.__name__
                out += [f"#### {sub_title} (inside `{name}`)", "", " ".join((sub.__doc__ or "").split()), "",
                        *_table(sub), ""]
    return "\n".join(out).rstrip() + "\n"


def _nested(model: type[BaseModel], seen: set[type[BaseModel]]) -> list[type[BaseModel]]:
    found = []
    for field in model.model_fields.values():
        for sub in _models(field.annotation):
            if sub not in seen:
                seen.add(sub)
                found.append(sub)
    return found


if __name__ == "__main__":
    print(reference_markdown(), end="")
