"""toolbox: model compression and data-efficient learning methods behind one plugin-based CLI."""

__version__ = "0.1.0"
