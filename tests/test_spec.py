"""The spec: validation errors name paths and fixes; YAML round trip; overrides; schema in sync."""

from __future__ import annotations

import json

import pytest
import yaml

import ddspec
from ddspec.errors import SpecError
from ddspec.spec import ConvNetSpec, DigitsData, FeatureMeanDistance, Problem, SyntheticSpec
from ddspec.spec.loading import load
from tests.conftest import ROOT


def codes_and_paths(exc: SpecError) -> set[tuple[str, str]]:
    return {(f.code, f.path) for f in exc.findings}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"data": {"kind": "digits"}, "modle": {}}, {("UNKNOWN_KEY", "modle")}),
        ({"data": {"kind": "mnist2d"}}, {("UNKNOWN_KIND", "data.kind")}),
        ({"data": {}}, {("UNKNOWN_KIND", "data.kind")}),
        ({}, {("MISSING_KEY", "data")}),
        ({"data": {"kind": "digits"}, "model": {"kind": "convnet", "depth": -1}}, {("OUT_OF_RANGE", "model.depth")}),
        ({"data": {"kind": "digits"}, "synthetic": {"per_class": 10**9}}, {("OUT_OF_RANGE", "synthetic.per_class")}),
        ({"data": {"kind": "digits"}, "synthetic": {"per_class": "ten"}}, {("BAD_TYPE", "synthetic.per_class")}),
        ({"data": {"kind": "npz"}}, {("MISSING_KEY", "data.path")}),
        ({"data": {"kind": "digits"}, "evaluate": {"metrics": ["acc"]}}, {("UNKNOWN_KIND", "evaluate.metrics.0.kind")}),
        ({"data": {"kind": "digits"}, "runtime": {"device": "tpu"}}, {("BAD_VALUE", "runtime.device")}),
        (
            {"data": {"kind": "digits"}, "scenarios": {"models": [{"kind": "mlp", "hidden": [0]}]}},
            {("OUT_OF_RANGE", "scenarios.models.0.hidden.0")},
        ),
    ],
)
def test_malformed_specs_name_the_path(spec: dict, expected: set) -> None:
    with pytest.raises(SpecError) as info:
        load(spec)
    assert codes_and_paths(info.value) == expected
    assert all(f.fix for f in info.value.findings)


def test_all_errors_reported_at_once() -> None:
    with pytest.raises(SpecError) as info:
        load({"data": {"kind": "digits"}, "model": {"kind": "convnet", "widht": 3, "depth": 0}, "foo": 1})
    assert codes_and_paths(info.value) == {
        ("UNKNOWN_KEY", "model.widht"), ("OUT_OF_RANGE", "model.depth"), ("UNKNOWN_KEY", "foo"),
    }
    typo = next(f for f in info.value.findings if f.path == "model.widht")
    assert "did you mean `width`" in typo.fix


def test_yaml_syntax_error_names_line(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  kind: digits\n synthetic: [\n")
    with pytest.raises(SpecError) as info:
        load(path)
    (finding,) = info.value.findings
    assert finding.code == "YAML_SYNTAX" and finding.path.startswith(f"{path}:")


def test_missing_spec_file(tmp_path) -> None:
    with pytest.raises(SpecError) as info:
        load(tmp_path / "nope.yaml")
    assert info.value.findings[0].code == "SPEC_NOT_FOUND"


def test_both_sizes_is_an_error() -> None:
    with pytest.raises(SpecError) as info:
        load({"data": {"kind": "digits"}, "synthetic": {"per_class": 2, "total": 20}})
    assert codes_and_paths(info.value) == {("INVALID", "synthetic")}


def test_synthetic_counts() -> None:
    assert SyntheticSpec().counts(3) == [10, 10, 10]
    assert SyntheticSpec(total=11).counts(3) == [4, 4, 3]


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_yaml_round_trip_is_lossless(example, tmp_path) -> None:
    problem = load(example)
    again = tmp_path / "again.yaml"
    again.write_text(problem.to_yaml())
    assert load(again) == problem
    assert load(problem.model_dump()) == problem


def test_python_and_yaml_are_the_same_problem() -> None:
    built = Problem(data=DigitsData(), model=ConvNetSpec(width=16), distance=FeatureMeanDistance())
    loaded = load({"data": {"kind": "digits"}, "model": {"kind": "convnet", "width": 16}, "distance": {"kind": "feature_mean"}})
    assert built == loaded


def test_overrides_are_validated_like_the_file() -> None:
    base = {"data": {"kind": "digits"}, "evaluate": {"seeds": [0, 1]}}
    p = load(base, ["synthetic.per_class=3", "evaluate.seeds.1=7", "model={kind: mlp, hidden: [4]}"])
    assert p.synthetic.per_class == 3 and p.evaluate.seeds == [0, 7] and p.model.hidden == [4]
    with pytest.raises(SpecError) as info:
        load(base, ["synthetic.per_class=-1"])
    assert codes_and_paths(info.value) == {("OUT_OF_RANGE", "synthetic.per_class")}
    for bad in ("novalue", "evaluate.seeds.5=1", "a..b=1"):
        with pytest.raises(SpecError) as info:
            load(base, [bad])
        assert info.value.findings[0].code == "BAD_OVERRIDE"


def test_relative_paths_resolve_against_the_spec_file_and_are_kept_as_written(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    spec = tmp_path / "sub" / "s.yaml"
    spec.write_text(yaml.safe_dump({"data": {"kind": "npz", "path": "d.npz"}}))
    data = load(spec).data
    assert data.path == "d.npz" and "d.npz" in load(spec).to_yaml()
    assert data.resolved(data.path) == str(tmp_path / "sub" / "d.npz")


def test_schema_file_is_in_sync() -> None:
    from ddspec.cli import schema_json

    committed = json.loads((ROOT / "schemas" / "ddspec.schema.json").read_text())
    assert committed == json.loads(schema_json()), "regenerate: ddspec schema > schemas/ddspec.schema.json"


def test_schema_lists_every_registered_kind() -> None:
    from ddspec.registry import DATA, DISTANCES, MODELS

    text = json.dumps(Problem.model_json_schema())
    for kind in DATA.kinds() + MODELS.kinds() + DISTANCES.kinds():
        assert f'"{kind}"' in text


def test_spec_import_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, ddspec; ddspec.compile(ddspec.load('examples/quickstart.yaml')); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_public_api() -> None:
    assert ddspec.Problem is Problem
    with pytest.raises(AttributeError):
        ddspec.nope  # noqa: B018


def test_spec_reference_doc_is_in_sync() -> None:
    from ddspec.spec.reference import reference_markdown

    committed = (ROOT / "docs" / "spec-reference.md").read_text()
    assert committed == reference_markdown(), "regenerate: python -m ddspec.spec.reference > docs/spec-reference.md"


def test_overrides_leave_the_callers_mapping_alone(tiny_spec) -> None:
    import copy

    from ddspec.spec.loading import load

    before = copy.deepcopy(tiny_spec)
    assert load(tiny_spec, ["model.width=16", "synthetic.per_class=3"]).model.width == 16
    assert tiny_spec == before
