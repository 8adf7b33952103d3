"""The project's one HTTP app: payment webhooks, health, and (later) metrics and a dashboard."""
