"""The seed server: a naive OpenAI-compatible HTTP server over HF Transformers (run ``python -m server``).

Correct and slow on purpose: one request at a time, and every prompt prefilled from its first token, the
long shared prefix included. Runs on ``HYBRID_DEVICE`` in ``HYBRID_DTYPE`` (target.toml sets them).
"""
