"""Mutate storage service."""
