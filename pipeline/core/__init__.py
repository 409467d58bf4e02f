"""Plumbing every stage uses: params, artifact paths, atomic writes, errors, the stage runner.

Imports nothing else of the project."""
