"""Fingerprints of every example's distilled tensors and metrics, to show that a refactor changes no result.

Each ``examples/*.yaml`` runs shrunk (one evaluation seed, 2 epochs, 3 outer iterations, at most 3 inner
steps, the example's extra cuts) in its own process; the SHA-256 of every distilled tensor and the exact
metric values are recorded.

    python benchmarks/example_hashes.py --record benchmarks/results/example_hashes.json   # before a change
    python benchmarks/example_hashes.py --check benchmarks/results/example_hashes.json    # after it

``--check`` prints one line per example (same / DIFFERENT, with the differing names; new for an example
that has no stored fingerprint) and exits 1 on any difference or failed run, so a deliberate change has
to be named.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAST = ["evaluate.seeds=[0]", "evaluate.epochs=2", "runtime.device=cpu", "runtime.progress=false",
        "runtime.threads=1"]
#: The adversarial metric at smoke size (the examples' own attack takes minutes).
ATTACK_SMOKE = "evaluate.metrics=[accuracy, {kind: adversarial, steps: 2, samples: 20, targets: 1, square: {queries: 5}}]"
EXTRA = {  # what an example's own schedule would still make slow
    "digits_dc": ["optimize.outer_loop=1", "train.steps=1"],
    "mnist1d_bilevel_predictions": ["task.teacher_epochs=1"],
    "digits_dc_curvature": ["optimize.outer_loop=1", "train.steps=1", ATTACK_SMOKE],
    "digits_bilevel_curvature": [ATTACK_SMOKE],
    "mnist1d_dc_curvature": [ATTACK_SMOKE],
    "mnist1d_predictions_curvature": ["task.teacher_epochs=1", ATTACK_SMOKE],
    "mnist1d_trajectory": ["distance.experts=1", "distance.expert_epochs=2", "distance.max_start_epoch=1",
                           "distance.expert_span=1"],
}


def overrides(path: Path) -> list[str]:
    """FAST, 3 outer iterations for gradient optimization, at most 3 inner steps, then the example's EXTRA."""
    import yaml

    raw = yaml.safe_load(path.read_text())
    sets = list(FAST)
    if raw.get("optimize", {}).get("kind", "gradient") == "gradient":
        sets.append("optimize.iterations=3")
    steps = (raw.get("train") or {}).get("steps")
    if steps:
        sets.append(f"train.steps={min(steps, 3)}")
    elif (raw.get("train") or {}).get("kind", "gradient") == "gradient" and raw.get("task"):
        sets.append("train.steps=3")
    return sets + EXTRA.get(path.stem, [])


def fingerprint(path: Path) -> dict:
    """Run one shrunk example in a fresh process; hash its tensors and read its metrics."""
    from safetensors.numpy import load_file

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        sets = [a for item in overrides(path) for a in ("--set", item)]
        proc = subprocess.run([sys.executable, "-m", "ddspec.cli", "run", str(path), "--out", str(out), *sets],
                              check=False, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            return {"error": proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]}
        tensors = load_file(str(out / "distilled.safetensors"))
        metrics = json.loads((out / "metrics.json").read_text())
    hashes = {k: hashlib.sha256(v.tobytes()).hexdigest()[:16] + f":{v.dtype}{list(v.shape)}"
              for k, v in sorted(tensors.items())}
    values = {k: v["values"] for k, v in sorted(metrics.items()) if isinstance(v, dict) and "values" in v}
    values.update({f"corruption.{k}": v["values"] for k, v in sorted(metrics.get("corruptions", {}).items())})
    return {"tensors": hashes, "metrics": values}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--record", type=Path)
    g.add_argument("--check", type=Path)
    p.add_argument("--only", nargs="*", default=None,
                   help="example stems to run (default: all); --record then keeps the other stored fingerprints")
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args()
    paths = sorted((ROOT / "examples").glob("*.yaml"))
    if args.only:
        paths = [q for q in paths if q.stem in args.only]
    with ThreadPoolExecutor(args.jobs) as pool:
        found = dict(zip([q.stem for q in paths], pool.map(fingerprint, paths)))
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        kept = json.loads(args.record.read_text()) if args.only and args.record.exists() else {}
        args.record.write_text(json.dumps({**kept, **found}, indent=1, sort_keys=True) + "\n")
        for name, fp in found.items():
            print(f"{name:40s} {'ERROR ' + str(fp['error']) if 'error' in fp else 'recorded'}")
        return 0
    stored = json.loads(args.check.read_text())
    bad = new = 0
    for name, fp in found.items():
        want = stored.get(name)
        if want == fp:
            print(f"{name:40s} same")
            continue
        if want is None and "error" not in fp:
            new += 1
            print(f"{name:40s} new (no stored fingerprint)")
            continue
        bad += 1
        if want is None:
            print(f"{name:40s} FAILED {fp['error']}")
            continue
        diff = [k for part in ("tensors", "metrics") for k in sorted(set(want.get(part, {})) | set(fp.get(part, {})))
                if want.get(part, {}).get(k) != fp.get(part, {}).get(k)]
        print(f"{name:40s} DIFFERENT {fp.get('error') or diff}")
    print(f"{len(found) - bad - new} same, {bad} different, {new} new")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
