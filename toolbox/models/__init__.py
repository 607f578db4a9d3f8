"""Architectures used by the papers. Registered by name in ``catalog``; built lazily."""


def build_for(arch: str, spec, **kwargs):
    """The registered architecture ``arch`` sized for a dataset: its classes, channels and image size
    come from ``spec`` (a registry.DatasetSpec); ``kwargs`` are the recipe's extra constructor
    arguments. Every method builds its networks through this one call."""
    from ..registry import current

    c, _, w = spec.shape
    return current().architecture(arch)(num_classes=spec.num_classes, in_channels=c, image_size=w, **kwargs)
