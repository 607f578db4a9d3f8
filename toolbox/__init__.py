"""toolbox: model compression and data-efficient learning methods behind one plugin-based CLI."""

__version__ = "0.1.0"

# The name on the package index. "toolbox" there belongs to an unrelated project, so every install
# hint must use this name; the command, the import package and the entry-point group stay "toolbox".
DISTRIBUTION = "toolbox-compression"
# Third-party plugins are published as PLUGIN_PREFIX + <name> (see docs/plugins.md, "Naming").
PLUGIN_PREFIX = DISTRIBUTION + "-"
