"""smollm2-code-edit-cpu seed server: OpenAI-compatible, HF Transformers, greedy, accepts predicted outputs (run ``python -m server``)."""
