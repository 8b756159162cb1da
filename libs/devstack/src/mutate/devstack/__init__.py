"""Local Mutate platform on embedded servers, for development and tests."""
