"""smollm2-chat-cpu seed server: a naive OpenAI-compatible HTTP server over HF Transformers (run ``python -m server``)."""
