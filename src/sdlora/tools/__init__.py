"""Command-line tools over sdlora's building blocks (scripts/*.py are thin wrappers around them)."""
