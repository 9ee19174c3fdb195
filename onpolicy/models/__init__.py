"""Models: load students and teachers (Hugging Face folders), LoRA students through PEFT, save and
export; the one place model paths (folders, ``.gguf`` files, ``tiny:`` and ``offline:`` specs) are
checked (``check_model_path``, before anything loads) and resolved to folders
(``resolve_model_path``).

One job per module, every public name importable from ``onpolicy.models``: ``paths`` (model path
specs), ``folders`` (a folder's files checked before loading), ``load`` (tokenizer and model),
``lora`` (adapters; ``adapters_disabled``), ``saved`` (save, merged export, ``init_from``).

A teacher can be the student's own base model with its adapters disabled (self-distillation):
``with adapters_disabled(student): teacher_logits = student(...)`` — see ``LocalTeacher``.
"""

from onpolicy.models.folders import (
    TOKENIZER_FILES,
    WEIGHT_PATTERNS,
    check_model_folder,
    check_run_models,
    check_tokenizer_folder,
    max_positions,
)
from onpolicy.models.load import (
    DTYPES,
    load_model,
    load_tokenizer,
    output_vocab_size,
    resolve_dtype,
)
from onpolicy.models.lora import (
    LoraSpec,
    adapters_disabled,
    apply_lora,
    is_peft,
    linear_module_names,
    load_lora_student,
)
from onpolicy.models.paths import (
    OFFLINE_MODELS,
    TINY_OPTIONS,
    check_model_path,
    parse_tiny_spec,
    resolve_model_path,
)
from onpolicy.models.saved import (
    export_merged,
    load_saved_weights,
    save_student,
    saved_weights_file,
)

__all__ = [
    "DTYPES",
    "OFFLINE_MODELS",
    "TINY_OPTIONS",
    "TOKENIZER_FILES",
    "WEIGHT_PATTERNS",
    "LoraSpec",
    "adapters_disabled",
    "apply_lora",
    "check_model_folder",
    "check_model_path",
    "check_run_models",
    "check_tokenizer_folder",
    "export_merged",
    "is_peft",
    "linear_module_names",
    "load_lora_student",
    "load_model",
    "load_saved_weights",
    "load_tokenizer",
    "max_positions",
    "output_vocab_size",
    "parse_tiny_spec",
    "resolve_dtype",
    "resolve_model_path",
    "save_student",
    "saved_weights_file",
]
