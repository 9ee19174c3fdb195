"""Tokens and offsets: each token's bytes, byte offsets, vocabulary maps, chat rendering and stop
tokens, the byte-sorted vocabulary (see ``alignment``'s docstring for the layout)."""
