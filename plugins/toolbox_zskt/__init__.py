"""Built-in plugin: zero-shot knowledge transfer by adversarial belief matching (Micaelli & Storkey 2019)."""
