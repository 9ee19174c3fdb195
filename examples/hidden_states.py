"""Hidden-state distillation added to on-policy reverse KL (configs/hidden_states.yaml): the
student's layers, through a trained linear map each, pulled toward the teacher's evenly spaced
layers (cosine distance), on the student's own samples.

    python examples/hidden_states.py [hidden.loss=mse hidden.weight=1.0 ...]
"""

from _common import run_recipe

if __name__ == "__main__":
    run_recipe("hidden_states")
