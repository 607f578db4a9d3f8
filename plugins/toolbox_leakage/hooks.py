"""The leakage plugin's hooks: the gradient-leakage metric and the sigmoid LeNet (no torch at import)."""

from toolbox.hookspecs import hookimpl
from toolbox.registry import Architecture, Method


@hookimpl
def register_methods(register):
    # named after the metric: `toolbox evaluate RUN --metric gradient-leakage` audits a run of any method
    register(Method(
        name="gradient-leakage",
        verbs=("evaluate",),
        summary="Privacy audit: recover single examples from their gradients, iDLG (exact label) or DLG "
                "(toolbox evaluate RUN --metric gradient-leakage [--n 10] [--mode idlg|dlg] [--iters 300] "
                "[--untrained] [--split test|train] [--seed 0])",
        schema=None,
        paper="arXiv:2001.02610",
    ))


@hookimpl
def register_architectures(register):
    register(Architecture("lenet-sigmoid", "toolbox_leakage.lenet:LeNetSigmoid",
                          "LeNet of DLG/iDLG: 3 stride-2/2/1 convs with sigmoid, weights U(-0.5, 0.5)"))


@hookimpl
def evaluate(method, source, options, device, out):
    from .audit import audit

    return audit(source, options, device, out)
