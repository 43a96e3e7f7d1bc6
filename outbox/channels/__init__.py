"""Delivery channels: console, SMTP and webhook, all behind the `Channel` protocol."""
