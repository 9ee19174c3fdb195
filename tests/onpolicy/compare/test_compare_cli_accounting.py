"""The table ``onpolicy compare`` prints marks the accounting the budget matched (★), as the
written report does: ``teacher_data: free`` stars the free column, not the paid one."""

from __future__ import annotations

import yaml
from tiny_compare import TINY_MODELS

from onpolicy.compare import main

CONFIG = {
    "task": {"name": "arithmetic", "digits": 2, "num_train": 40, "num_eval": 4},
    "models": TINY_MODELS,
    "methods": ["sft"],
    "train": {"steps": 1, "batch_size": 4, "max_new_tokens": 16, "lr": 1e-3},
    "budget": {"match": "flops", "reference": "sft", "teacher_data": "free"},
}


def test_printed_table_stars_the_matched_accounting(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ONPOLICY_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "output_dir": str(tmp_path / "out")}))
    assert main(["--config", str(path), "--no-progress"]) == 0
    header = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| method"))
    assert "teacher data free ★" in header and "teacher data paid ★" not in header
