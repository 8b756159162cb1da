"""Mutate transformer service."""
