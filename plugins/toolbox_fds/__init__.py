"""FDS: forward-mode differentiation with hyperparameter sharing (Micaelli & Storkey, NeurIPS 2021)."""
