"""Mutate notifier service."""
