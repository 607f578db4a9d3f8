"""mixup training (Zhang et al. 2018) as a toolbox plugin."""
