"""Hidden-state distillation: the teacher's intermediate hidden states reach the objective through
``TeacherScores.layer_hidden_L_N_D`` (same tokenizer) or ``CrossTeacherScores.layer_hidden_L_Nt_D``
(across tokenizers); a trained ``HiddenProjection`` maps the student's states to the teacher's
width; ``WithHidden`` adds the term to any same-tokenizer objective at every completion position,
``WithCrossHidden`` to a cross-tokenizer one at the ends of aligned spans. Config: the ``hidden``
block (``onpolicy.config.HiddenConfig``).

- ``layers``: layer maps, reading hidden states from a forward (``capture_hidden_states``);
- ``projection``: ``HiddenProjection``;
- ``objective``: ``WithHidden`` and ``hidden_term``;
- ``cross``: ``WithCrossHidden``, ``span_end_rows`` and ``span_end_term``;
- ``build``: the up-front checks and the trainer's construction from a ``Config``.

(No imports here: ``onpolicy.teacher`` imports ``layers``, and ``objective`` imports the teacher's
types.)
"""
