"""End-to-end tests: the whole platform, as subprocesses on real servers."""
