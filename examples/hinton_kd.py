"""Hinton's soft-label KD (configs/hinton_kd.yaml): ``alpha * CE(gold) + (1 - alpha) * T^2 *
KL(teacher_T || student_T)`` on the dataset's gold completions.

    python examples/hinton_kd.py [objective.params.alpha=0.3 objective.params.temperature=4 ...]
"""

from _common import run_recipe

if __name__ == "__main__":
    run_recipe("hinton_kd")
