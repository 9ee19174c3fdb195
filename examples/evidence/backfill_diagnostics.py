"""Add the collapse diagnostics (repetition rate, share cut at the length limit) to stored compare
runs made before the harness recorded them, from the trainer's own evaluations of those runs.

    python examples/evidence/backfill_diagnostics.py --reuse OLD/reuse ... --runs OLD/runs ... \
        --out NEW/reuse

Each ``job-*.json`` record of ``--reuse`` (``reuse_runs: true``) without ``repetition`` is matched
to the ``metrics.jsonl`` under ``--runs`` whose ``eval/kl_per_byte`` equals the record's curve at
every step (the same run), and gets each curve point's ``eval/repetition_rate`` and
``eval/truncated_share``. Its end point takes its last evaluation's: the same weights and the
same greedy decoding of the same held-out prompts (tests/onpolicy/compare/
test_real_pair_shape_e2e.py checks the two agree). An untrained (``untouched``) record takes the
step-0 evaluation of a run with its seed and start (the same weights). Records are written to
``--out`` under their own names (their reuse keys), so a comparison config pointed there reuses
them; the originals are left as they are.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

KEYS = {"repetition": "eval/repetition_rate", "cut_share": "eval/truncated_share"}


def evals(path: Path) -> dict[int, dict[str, Any]]:
    """``{step: record}`` of a ``metrics.jsonl``'s evaluations."""
    lines = [json.loads(s) for s in path.read_text().splitlines() if s.strip()]
    return {int(r["step"]): r for r in lines if "eval/kl_per_byte" in r}


def matches(curve: list[dict[str, Any]], found: dict[int, dict[str, Any]]) -> bool:
    """Whether the evaluations ``found`` are the run of ``curve`` (equal KL/byte at every step)."""
    return bool(curve) and all(
        p["step"] in found and abs(found[p["step"]]["eval/kl_per_byte"] - p["kl_per_byte"]) < 1e-12
        for p in curve
    )


def backfill(record: dict[str, Any], found: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """``record`` with its curve points' and end point's diagnostics from ``found``."""
    curve = [
        {**p, **{k: found[p["step"]].get(m) for k, m in KEYS.items()}} for p in record["curve"]
    ]
    return {**record, "curve": curve, **{k: curve[-1][k] for k in KEYS}}


def backfill_all(
    records: dict[str, dict[str, Any]], runs: list[dict[int, dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    """Every record that lacks diagnostics, backfilled (trained runs first, then the untrained
    ones from a trained run's step 0 with the same seed and start); unmatched ones left out."""
    out = {}
    for name, r in records.items():
        if r.get("repetition") is None and r["curve"]:
            found = next((f for f in runs if matches(r["curve"], f)), None)
            if found is not None:
                out[name] = backfill(r, found)
    for name, r in records.items():
        if r.get("repetition") is None and not r["curve"]:
            twin = next(
                (t for t in out.values() if (t["seed"], t["start"]) == (r["seed"], r["start"])),
                None,
            )
            if twin is not None and twin["curve"][0]["step"] == 0:
                out[name] = {**r, **{k: twin["curve"][0][k] for k in KEYS}}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reuse", nargs="+", type=Path, required=True)
    p.add_argument("--runs", nargs="+", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    records = {f.name: json.loads(f.read_text()) for d in a.reuse for f in d.glob("job-*.json")}
    runs = [evals(f) for d in a.runs for f in sorted(d.glob("**/metrics.jsonl"))]
    done = backfill_all(records, runs)
    a.out.mkdir(parents=True, exist_ok=True)
    for name, r in records.items():
        (a.out / name).write_text(json.dumps(done.get(name, r)))
        got = done.get(name, r)
        print(f"{name}: {r['method']} seed {r['seed']} repetition {got.get('repetition')} "
              f"cut {got.get('cut_share')}{'' if name in done else ' (unchanged)'}")  # fmt: skip


if __name__ == "__main__":
    main()
