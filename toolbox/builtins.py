"""Core's own registrations: the datasets, architectures and recipes/ folder every method shares.

Registered under the name "toolbox" through the same hooks as plugins, so the registry has a
single way in. Nothing here imports torch.
"""

from .hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    from .data.catalog import datasets

    for spec in datasets():
        register(spec)


@hookimpl
def register_architectures(register):
    from .models.catalog import architectures

    for arch in architectures():
        register(arch)


@hookimpl
def register_loggers(register):
    from .registry import Logger

    register(Logger("tensorboard", "toolbox.trackers:open_tensorboard",
                    "TensorBoard event files in <run>/tensorboard (tensorboard --logdir <run>)",
                    install="toolbox-compression[tensorboard]"))
    register(Logger("mlflow", "toolbox.trackers:open_mlflow",
                    "an MLflow run (MLFLOW_TRACKING_URI, or a file store in <run>/mlruns) with params, metrics, images",
                    install="toolbox-compression[mlflow]"))


@hookimpl
def register_recipes(register):
    from importlib.resources import files

    register(files("toolbox_recipes"))
