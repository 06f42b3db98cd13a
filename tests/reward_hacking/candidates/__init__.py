"""The corpus: one module per candidate (see ``kit.py`` for the contract)."""
