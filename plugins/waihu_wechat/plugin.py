"""Entry point of the wechat notifier plugin."""
