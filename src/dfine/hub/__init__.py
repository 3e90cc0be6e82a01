"""Checkpoint files: reading, writing, renaming and resolving names to files."""
