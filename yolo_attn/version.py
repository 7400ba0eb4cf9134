"""The plugin's version: one place, read by the package, the build (pyproject.toml) and the messages that name it."""

__version__ = "0.1.0"
