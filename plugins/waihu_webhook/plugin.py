"""Entry point of the webhook notifier plugin."""
