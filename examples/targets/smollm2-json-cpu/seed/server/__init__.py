"""smollm2-json-cpu seed server: OpenAI-compatible, HF Transformers, greedy under an XGrammar mask (run ``python -m server``)."""
