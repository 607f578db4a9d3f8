"""Built-in plugin: dataset condensation (DC, DSA, DM) and the condensed-set evaluation protocol."""
