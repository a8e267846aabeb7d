"""The chat logic shared by the Django and Flask examples: a deterministic fake LLM (or OpenAI
when ``OPENAI_API_KEY`` is set), one tool, and streaming -- all recorded with posthog-llm-trace."""
