"""A student cut from the teacher (configs/cut_student.yaml): keep teacher layers 0 and 2 of the
3-layer tiny teacher (``onpolicy init-student``), then distill on-policy with reverse KL.

    python examples/cut_student.py [train.steps=60 ...]
"""

from _common import REPO, run_recipe

from onpolicy.init_student import init_student

TEACHER = "tiny:small,seed=1,pretrain_steps=300"

if __name__ == "__main__":
    init_dir = REPO / "runs" / "cut_student" / "init"
    if not (init_dir / "config.json").is_file():
        made = init_student(TEACHER, init_dir, layers=[0, 2])
        print(f"cut {made.student_params:,} of the teacher's {made.teacher_params:,} parameters")
    run_recipe("cut_student", [f"student.path={init_dir}"])
