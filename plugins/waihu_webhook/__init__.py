"""Built-in notifier plugin: hot leads posted as signed JSON to any HTTP endpoint.

``waihu_webhook.webhook`` holds the notifier and documents the request a
receiver gets and how to verify its signature.
"""
