"""On-policy distillation with reverse KL (configs/onpolicy_reverse_kl.yaml), on CPU in ~1 minute.

The student samples completions, the teacher scores every position, and the student minimizes
KL(student || teacher) on its own samples. ``eval/kl_per_token`` is that KL teacher-forced on the
student's greedy completions of held-out prompts: it falls as the student learns.

    python examples/onpolicy_reverse_kl.py [train.steps=20 optim.lr=3e-3 ...]
"""

from _common import run_recipe

if __name__ == "__main__":
    run_recipe("onpolicy_reverse_kl")
