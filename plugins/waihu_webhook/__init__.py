"""Placeholder: filled in by the notifier work."""
