"""Architectures used by the papers. Registered by name in ``catalog``; built lazily."""
