"""The HTTP server (needs the `serve` extra): OpenAI-compatible routes and the chat page."""
