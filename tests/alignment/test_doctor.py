"""The compatibility doctor on real tokenizer pairs."""

from __future__ import annotations

from alignment.doctor import recommend, run_doctor
from onpolicy import offline


def test_cross_family_pair_report(real_tokenizers):
    report = run_doctor(real_tokenizers["gemma3"], real_tokenizers["smollm2"])
    assert "same tokenizer (by content): no" in report
    assert "<end_of_turn> (106)" in report and "<|im_end|> (2)" in report
    assert "262,144 / -" in report and "49,152 / -" in report  # no model folder given
    assert "| digits '31415926'" in report and "3|1|4|1|5|9|2|6" in report
    assert "recommended loss: next-byte divergence" in report
    assert "warning: different end-of-turn tokens" in report
    assert "renders <bos> and the tokenizer adds another" in report


def test_same_tokenizer_report(real_tokenizers):
    conversations = [[{"role": "user", "content": "2+2?"},
                      {"role": "assistant", "content": "4, of course."}],
                     [{"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "Hello  there!"}]]  # fmt: skip
    qwen = real_tokenizers["qwen"]
    report = run_doctor(qwen, qwen, conversations)
    assert "same tokenizer (by content): yes" in report
    assert "alignment coverage: 100% of" in report and "(2 conversations)" in report
    assert "recommended loss: same-vocab divergence" in report
    assert "warning" not in report


def test_folders_and_base_model_without_template():
    report = run_doctor(offline.smollm2_dir(), offline.gpt2_tokenizer_dir())
    assert "the student has no chat template" in report
    assert "| 50,257 / -" in report and "| 49,152 / 49,152" in report  # padded size from config


def test_recommend_thresholds():
    assert recommend(True, 0.0, 0.0, byte_exact=True).startswith("same-vocab")
    assert recommend(False, 0.9, 0.9, byte_exact=True).startswith("next-byte")
    assert recommend(False, 0.9, 0.1).startswith("GOLD")
    assert recommend(False, 0.1, 0.9).startswith("ULD")
    assert recommend(False, 0.1, 0.1).startswith("sampled-token span reward")
