"""The distillation benchmarks' CIFAR architectures (RepDistiller's resnet8..110, resnet8x4/32x4,
vgg8..19 with batch norm, MobileNetV2, ShuffleNetV1/V2, ResNet-18/34/50): the reference's parameter
counts, state-dict names and shapes, and its forward pass transcribed here, evaluated on our modules'
own weights."""

import hashlib

import pytest
import torch
import torch.nn.functional as F

from toolbox import plugins
from toolbox.models import build_for

# measured by building RepDistiller's models (models/__init__.py model_dict, plus resnetv2's ResNet18/34;
# num_classes=100) at HobbitLong/RepDistiller HEAD: parameters, state-dict entries, and the first 16 hex
# digits of sha256(repr(sorted((name, shape) for each state-dict entry))), i.e. the exact names and
# shapes its checkpoints hold (None for the WRNs, whose names toolbox import maps: test_checkpoint_import)
REFERENCE = {
    "resnet8": (83892, 56, "39c6acc1ba29ecf6"), "resnet14": (181108, 92, "7454acde5e53f392"),
    "resnet20": (278324, 128, "cf710a76243f2b8c"), "resnet32": (472756, 200, "4c790dcab5eb9028"),
    "resnet44": (667188, 272, "5f33431aeb46da76"), "resnet56": (861620, 344, "5d442f2912af2aaf"),
    "resnet110": (1736564, 668, "8f50cd07f82e75cb"), "resnet8x4": (1233540, 62, "6cfd514df58b28af"),
    "resnet32x4": (7433860, 206, "86c2084be49fc2a3"),
    "vgg8": (3965028, 37, "0a387e34dd845714"), "vgg11": (9277284, 58, "88383b98d4479b4b"),
    "vgg13": (9462180, 72, "86b9c338b9dbc6c7"), "vgg16": (14774436, 93, "817ffe596a8f2690"),
    "vgg19": (20086692, 114, "5a8e42f17ae643c5"),
    "mobilenetv2": (812836, 320, "4f50e9ebb8f90a54"), "shufflenetv1": (949258, 296, "0d87b45d0a9e89ab"),
    "shufflenetv2": (1355528, 338, "d2c6860f03cc1a5d"), "resnet50-cifar": (23705252, 320, "13bb09321c5b6498"),
    "resnet18-cifar": (11220132, 122, "691c4b32b04b1a42"), "resnet34-cifar": (21328292, 218, "f76d613cd3c63742"),
    "wrn-16-1": (180916, 82, None), "wrn-16-2": (703284, 83, None), "wrn-40-1": (569780, 226, None),
    "wrn-40-2": (2255156, 227, None),
}


def spec(name="cifar100"):
    return plugins.load().registry.dataset(name)


@pytest.mark.parametrize("arch", sorted(REFERENCE))
def test_parameter_counts_state_dict_names_and_shapes_are_the_reference_ones(arch):
    model = build_for(arch, spec())
    state = model.state_dict()
    params, entries, digest = REFERENCE[arch]
    assert (sum(p.numel() for p in model.parameters()), len(state)) == (params, entries)
    if digest is not None:
        names = repr(sorted((k, tuple(v.shape)) for k, v in state.items()))
        assert hashlib.sha256(names.encode()).hexdigest()[:16] == digest


@pytest.mark.parametrize("arch", sorted(REFERENCE))
def test_every_architecture_also_runs_on_8x8_digits(arch):
    model = build_for(arch, spec("digits")).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def _bn(x, sd, p):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                        False, 0.0, 1e-5)


def reference_resnet(x, sd, blocks: int):
    """RepDistiller's ResNet.forward (models/resnet.py) in eval mode, written out over its state dict."""
    x = F.relu(_bn(F.conv2d(x, sd["conv1.weight"], padding=1), sd, "bn1"))
    for stage, stride in ((1, 1), (2, 2), (3, 2)):
        for i in range(blocks):
            p, s = f"layer{stage}.{i}", stride if i == 0 else 1
            out = F.relu(_bn(F.conv2d(x, sd[f"{p}.conv1.weight"], stride=s, padding=1), sd, f"{p}.bn1"))
            out = _bn(F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1), sd, f"{p}.bn2")
            residual = (_bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=s), sd, f"{p}.downsample.1")
                        if f"{p}.downsample.0.weight" in sd else x)
            x = F.relu(out + residual)
    x = F.avg_pool2d(x, 8).flatten(1)  # the reference's AvgPool2d(8) on a 32x32 input's last map
    return F.linear(x, sd["fc.weight"], sd["fc.bias"])


def reference_vgg(x, sd, cfg):
    """RepDistiller's VGG.forward (models/vgg.py, batch_norm=True) in eval mode over its state dict: in
    block b, layer j is conv block{b}.{3j} and batch norm block{b}.{3j+1}; a block's last ReLU is outside it."""
    h = x.shape[2]

    def block(x, b):
        for j in range(len(cfg[b])):
            x = _bn(F.conv2d(x, sd[f"block{b}.{3 * j}.weight"], sd[f"block{b}.{3 * j}.bias"], padding=1), sd,
                    f"block{b}.{3 * j + 1}")
            if j < len(cfg[b]) - 1:
                x = F.relu(x)
        return x

    x = F.max_pool2d(F.relu(block(x, 0)), 2)
    x = F.max_pool2d(F.relu(block(x, 1)), 2)
    x = F.max_pool2d(F.relu(block(x, 2)), 2)
    x = F.relu(block(x, 3))
    if h == 64:
        x = F.max_pool2d(x, 2)
    x = F.adaptive_avg_pool2d(F.relu(block(x, 4)), (1, 1)).flatten(1)
    return F.linear(x, sd["classifier.weight"], sd["classifier.bias"])


def _randomised_eval(model):
    """Batch norms with non-trivial statistics and affine weights, so the comparison exercises them."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize("arch, blocks", [("resnet8", 1), ("resnet20", 3), ("resnet8x4", 1)])
def test_resnets_compute_the_reference_forward(arch, blocks):
    torch.manual_seed(0)
    model = _randomised_eval(build_for(arch, spec()))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), reference_resnet(x, model.state_dict(), blocks), atol=1e-5)


@pytest.mark.parametrize("arch, size", [("vgg8", 32), ("vgg13", 32), ("vgg8", 64)])
def test_vggs_compute_the_reference_forward(arch, size):
    from toolbox.models.vgg import CONFIGS

    torch.manual_seed(0)
    model = _randomised_eval(build_for(arch, spec()))
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ours, ref = model(x), reference_vgg(x, model.state_dict(), CONFIGS[int(arch[3:])])
    assert torch.allclose(ours, ref, atol=1e-4 * float(ref.abs().max())), float((ours - ref).abs().max())


@pytest.mark.parametrize("arch", ["resnet8", "vgg8"])
def test_they_learn_digits(tmp_path, arch):
    from toolbox import runs

    plugins.reset()
    _, metrics = runs.execute("train", "supervised", None, [f"model.arch={arch}", "epochs=3"], out=tmp_path / arch,
                              device="cpu")
    assert metrics["accuracy"] > 0.85, metrics
