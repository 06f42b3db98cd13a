"""The seed server: a naive OpenAI-compatible HTTP server over HF Transformers (run ``python -m server``).

It is correct and slow on purpose: the agents start from it. REPLACE it with your own starting point if you
have one (keep the start command in target.toml [deliverable] working), or keep it as it is.
"""
