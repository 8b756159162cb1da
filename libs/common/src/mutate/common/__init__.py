"""Shared plumbing of the Mutate services."""
