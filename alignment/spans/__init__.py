"""Span math and losses: span alignment, chain-rule span distributions, ULD, GOLD-style and
next-byte losses (see ``alignment``'s docstring for the layout). Modules starting with ``_`` are
the losses' private row kernels."""
