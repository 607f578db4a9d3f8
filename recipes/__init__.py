"""Recipes shipped with toolbox: paper configurations and CPU configurations (YAML files)."""
