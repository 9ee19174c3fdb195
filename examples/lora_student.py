"""A LoRA student (configs/lora_student.yaml): only the adapters train; the run saves the adapters
(``final/``) and a merged plain model (``final-merged/``) that loads without PEFT.

    python examples/lora_student.py [lora.r=16 ...]
"""

from _common import run_recipe

if __name__ == "__main__":
    result = run_recipe("lora_student")
    print(f"adapters: {result.final_dir}\nmerged model: {result.merged_dir}")
