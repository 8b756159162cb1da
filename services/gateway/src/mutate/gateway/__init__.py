"""Mutate gateway service."""
