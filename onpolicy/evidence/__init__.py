"""Diagnostics that explain when on-policy distillation pays (pure functions; see
``onpolicy.evidence.diagnostics``)."""
