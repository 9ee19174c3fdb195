"""`onpolicy init-student`: a student cut from a subset of the teacher's layers."""

from __future__ import annotations

import json
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

from onpolicy.cli import main as cli_main
from onpolicy.errors import ConfigError
from onpolicy.init_student import (
    RECORD,
    cut_student,
    every_k,
    init_student,
    is_tied,
    parse_layers,
)
from onpolicy.models import LoraSpec, apply_lora, load_model, load_tokenizer
from onpolicy.tiny import tiny_model_dir, tiny_tokenizer_dir


@pytest.fixture(scope="module")
def tied_teacher(tmp_path_factory):
    """A 5-layer Llama whose LM head is tied to its embeddings, saved with the tiny tokenizer."""
    tok = load_tokenizer(tiny_tokenizer_dir("bpe"))
    config = LlamaConfig(
        vocab_size=len(tok) + 7, hidden_size=64, intermediate_size=96, num_hidden_layers=5,
        num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # non-trivial norms, so a wrong norm copy would show
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    out = tmp_path_factory.mktemp("tied_teacher")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _ids(tok, texts=("What is 2 plus 2?", "Hi there, how are you")):
    batch = tok(list(texts), return_tensors="pt", padding=True)
    return batch["input_ids"], batch["attention_mask"]


def _layer_calls(model):
    """Register hooks recording each decoder layer's (args, kwargs, output) of the next forward."""
    calls, handles = {}, []
    for i, layer in enumerate(model.model.layers):

        def hook(_m, args, kwargs, output, i=i):
            calls[i] = (args, kwargs, output)

        handles.append(layer.register_forward_hook(hook, with_kwargs=True))
    return calls, handles


def _hidden(output):
    return output[0] if isinstance(output, tuple) else output


@pytest.mark.parametrize("layers", [[0, 2, 4], [1, 3], [4]])
def test_kept_layers_compute_exactly_the_teachers_layers(tied_teacher, tmp_path, layers):
    out = tmp_path / "student"
    result = init_student(tied_teacher, out, layers=layers)
    teacher = AutoModelForCausalLM.from_pretrained(tied_teacher).eval()
    student = AutoModelForCausalLM.from_pretrained(out).eval()  # plain transformers loads it
    assert student.config.num_hidden_layers == len(layers) == len(student.model.layers)
    assert result.layers == layers and result.teacher_layers == 5
    assert result.student_params < result.teacher_params
    assert json.loads((out / RECORD).read_text())["layers"] == layers
    assert is_tied(student) and result.tied
    assert [m.self_attn.layer_idx for m in student.model.layers] == list(range(len(layers)))
    ids, attn = _ids(load_tokenizer(out))
    t_calls, t_handles = _layer_calls(teacher)
    s_calls, s_handles = _layer_calls(student)
    with torch.no_grad():
        teacher(input_ids=ids, attention_mask=attn, use_cache=False)
        student(input_ids=ids, attention_mask=attn, use_cache=False)
        for h in t_handles + s_handles:
            h.remove()
        # student layer i, given the inputs teacher layer layers[i] saw, gives its output exactly
        for i, j in enumerate(layers):
            args, kwargs, want = t_calls[j]
            got = student.model.layers[i](*args, **kwargs)
            assert torch.equal(_hidden(got), _hidden(want))
    # the first layer's input is the (copied) embedding of the same ids
    assert torch.equal(_hidden(s_calls[0][0][0]), _hidden(t_calls[0][0][0]))
    assert torch.equal(student.model.norm.weight, teacher.model.norm.weight)
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight)


def test_keeping_every_layer_reproduces_the_teacher_exactly(tmp_path):
    teacher_dir = tiny_model_dir("small", "bpe", seed=1, pretrain_steps=300)
    init_student(teacher_dir, tmp_path / "s", every=1)
    teacher, student = load_model(teacher_dir), load_model(tmp_path / "s")
    assert not is_tied(student) and not is_tied(teacher)  # untied stays untied
    ids, attn = _ids(load_tokenizer(teacher_dir))
    with torch.no_grad():
        want = teacher(input_ids=ids, attention_mask=attn).logits
        assert torch.equal(student(input_ids=ids, attention_mask=attn).logits, want)


def test_per_layer_config_lists_are_cut_and_the_student_reloads(tmp_path):
    config = Gemma3TextConfig(
        vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=6,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=4,
    )  # fmt: skip
    torch.manual_seed(0)
    teacher = AutoModelForCausalLM.from_config(config).eval()
    assert teacher.config.layer_types[5] == "full_attention"
    student = cut_student(teacher, [0, 5])
    assert student.config.layer_types == ["sliding_attention", "full_attention"]
    student.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert again.config.layer_types == ["sliding_attention", "full_attention"]
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        assert torch.equal(again(ids).logits, student(ids).logits)


def test_a_lora_student_builds_on_the_cut_student_and_trains(tied_teacher, tmp_path):
    init_student(tied_teacher, tmp_path / "s", every=2)
    model = apply_lora(load_model(tmp_path / "s"), LoraSpec(rank=4))
    ids, attn = _ids(load_tokenizer(tmp_path / "s"))
    loss = model(input_ids=ids, attention_mask=attn, labels=ids).loss
    loss.backward()
    trained = [n for n, p in model.named_parameters() if p.grad is not None]
    assert trained and all("lora_" in n for n in trained)
    assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters() if p.grad is not None)


def test_full_training_of_a_tied_student_keeps_the_head_tied(tied_teacher, tmp_path):
    init_student(tied_teacher, tmp_path / "s", layers=[0, 4])
    model = load_model(tmp_path / "s")
    ids, attn = _ids(load_tokenizer(tmp_path / "s"))
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    model(input_ids=ids, attention_mask=attn, labels=ids).loss.backward()
    optim.step()
    assert is_tied(model)
    assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)


def test_layer_specs_and_bad_inputs(tied_teacher, tmp_path):
    assert parse_layers("0, 2,4") == [0, 2, 4]
    assert every_k(30, 3) == list(range(0, 30, 3)) and len(every_k(30, 3)) == 10
    with pytest.raises(ConfigError, match="not an integer"):
        parse_layers("0,a")
    with pytest.raises(ConfigError, match="outside the teacher's 5 layers"):
        init_student(tied_teacher, tmp_path / "a", layers=[0, 5])
    with pytest.raises(ConfigError, match="strictly increasing"):
        init_student(tied_teacher, tmp_path / "a", layers=[2, 0])
    with pytest.raises(ConfigError, match="exactly one"):
        init_student(tied_teacher, tmp_path / "a", layers=[0], every=2)
    with pytest.raises(ConfigError, match="positive"):
        init_student(tied_teacher, tmp_path / "a", every=0)
    with pytest.raises(ConfigError, match="not a Hugging Face model folder"):
        init_student(tmp_path / "nothing", tmp_path / "a", every=2)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        init_student(tied_teacher, tmp_path / "full", every=2)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "a").exists()


def test_cli(tied_teacher, tmp_path, capsys):
    out = tmp_path / "s"
    assert cli_main(["init-student", "--teacher", str(tied_teacher), "--every", "2", "--out",
                     str(out)]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["layers"] == [0, 2, 4]
    assert cli_main(["init-student", "--teacher", str(tied_teacher), "--layers", "0,9", "--out",
                     str(tmp_path / "t")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith("onpolicy init-student: error:") and "outside" in err


@pytest.mark.slow
def test_smollm2_cut_to_every_third_layer_loads_and_generates(tmp_path):
    offline = pytest.importorskip("onpolicy.offline")
    start = time.perf_counter()
    result = init_student(offline.smollm2_dir(), tmp_path / "s", every=3)
    assert result.layers == list(range(0, 30, 3)) and result.tied
    assert result.student_params < 0.55 * result.teacher_params
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "s").eval()
    tok = load_tokenizer(tmp_path / "s")
    assert model.config.num_hidden_layers == 10 and is_tied(model)
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=8, do_sample=False)
        logits = model(ids).logits
    assert gen.shape[1] == ids.shape[1] + 8 and torch.isfinite(logits).all()
    print(f"cut + load + generate: {time.perf_counter() - start:.1f} s")
