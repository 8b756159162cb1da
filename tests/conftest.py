"""Shared fixtures: real servers and service processes from mutate.devstack."""

pytest_plugins = ["mutate.devstack.pytest_plugin"]
