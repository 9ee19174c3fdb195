"""examples/evidence/real_pair_table.py: mean ± sd over seeds, arms paired with SFT by seed, and
whether a run was still moving; hand-made report."""

from __future__ import annotations

from examples.evidence.real_pair_table import moving, tables


def _job(method, seed, kl_char, kls, rep, losses=()):
    curve = [{"step": 5 * i, "kl_per_byte": k, "teacher_nll_per_byte": k + 0.5}
             for i, k in enumerate(kls)]  # fmt: skip
    return {"method": method, "seed": seed, "status": "ok", "kl_per_char": kl_char,
            "curve": curve, "repetition": rep, "cut_share": rep, "lr": None if not kls else 1e-4,
            "steps": 5 * max(len(kls) - 1, 0), "losses": list(losses)}  # fmt: skip


def test_tables_by_hand():
    jobs = [
        _job("untouched", 0, 1.2, [], 0.1),
        _job("sft", 0, 1.0, [1.3, 1.2, 1.1], 0.0, losses=[2.0] * 5 + [1.0] * 5),
        _job("sft", 1, 1.2, [1.3, 1.3, 1.0], 0.2, losses=[2.0] * 5 + [1.5] * 5),
        _job("reverse_kl", 0, 1.3, [1.3, 0.5, 0.9], 0.6),
        _job("reverse_kl", 1, 1.4, [1.3, 0.4, 0.8], 0.8),
    ]
    lines = tables({"jobs": jobs})
    first = lines[: lines.index("")]
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in first[2:]}
    sft = rows["sft"]
    assert sft[1:3] == ["0, 1", "1.100 ± 0.141"]
    assert sft[3] == "1.550 ± 0.071" and sft[4] == "1.050 ± 0.071"  # end NLL = KL + 0.5
    assert rows["untouched"][3] == "1.800"  # step 0 of its seed's trained run: 1.3 + 0.5
    assert rows["reverse_kl"][5] == "0.700 ± 0.141"
    paired = next(line for line in lines if line.startswith("| reverse_kl | 0.250"))
    assert "+0.300, +0.200" in paired and paired.endswith("| loses |")
    loss, kl = moving(jobs[1])  # losses 2.0 x 5 then 1.0 x 5; KL/byte 1.1 at step 10, 1.3 at 0
    assert loss == -1.0 and abs(kl + 0.2) < 1e-12
    assert moving(jobs[0]) == (None, None)
