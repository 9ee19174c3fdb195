"""Hidden-state distillation (same tokenizer): the teacher's intermediate hidden states reach the
objective through ``TeacherScores.layer_hidden_L_N_D``; a trained ``HiddenProjection`` maps the
student's states to the teacher's width; ``WithHidden`` adds the term to any same-tokenizer
objective. Config: the ``hidden`` block (``onpolicy.config.HiddenConfig``).

- ``layers``: layer maps, reading hidden states from a forward (``capture_hidden_states``);
- ``projection``: ``HiddenProjection``;
- ``objective``: ``WithHidden`` and ``hidden_term``;
- ``build``: the up-front checks and the trainer's construction from a ``Config``.

(No imports here: ``onpolicy.teacher`` imports ``layers``, and ``objective`` imports the teacher's
types.)
"""
