"""The chat layer: templates (a guarded jinja2 sandbox and the built-ins), the session that keeps a
conversation in one engine's KV cache, and the split of a reasoning model's <think> part."""
