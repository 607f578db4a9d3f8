"""Names -> constructors of core's architectures. Import-light: the modules load on first build."""

from ..registry import Architecture

WRN = "toolbox.models.wrn:WideResNet"
CONVNET = "toolbox.models.convnet:ConvNet"
MLP = "toolbox.models.small:MLP"
CIFAR_RESNET = "toolbox.models.cifar_resnet:CifarResNet"
VGG = "toolbox.models.vgg:VGG"
MOBILE = "toolbox.models.mobile"
WIDE_STEM = "toolbox.models.resnet_wide_stem:WideStemResNet"
VIT = "toolbox.models.vit:ViT"
# dim 64, depth 4, patch 2 on 8x8 digits: the small-data setting of the SPT/LSA digits check
VIT_TINY = {"patch_size": 2, "dim": 64, "depth": 4, "heads": 4, "dim_head": 16, "mlp_dim": 128}


def architectures() -> list[Architecture]:
    archs = [
        Architecture(f"wrn-{d}-{k}", WRN, f"pre-activation WideResNet depth {d} width {k} (group outputs for AT)",
                     {"depth": d, "widen_factor": k})
        for d, k in [(10, 1), (10, 2), (16, 1), (16, 2), (16, 4), (16, 8), (28, 10), (40, 1), (40, 2), (40, 4)]
    ]
    archs += [Architecture(f"resnet{d}", CIFAR_RESNET, f"CIFAR ResNet-{d} (widths 16/32/64), RepDistiller's", {"depth": d})
              for d in (8, 14, 20, 32, 44, 56, 110)]
    archs += [Architecture(f"resnet{d}x4", CIFAR_RESNET, f"CIFAR ResNet-{d} at 4x width (32/64/128/256), RepDistiller's",
                           {"depth": d, "widths": (32, 64, 128, 256)}) for d in (8, 32)]
    archs += [Architecture(f"vgg{d}", VGG, f"VGG-{d} with batch norm for CIFAR (no FC head), RepDistiller's", {"depth": d})
              for d in (8, 11, 13, 16, 19)]
    archs += [
        Architecture("mobilenetv2", f"{MOBILE}:MobileNetV2", "MobileNetV2 T=6 width 0.5 for CIFAR (RepDistiller's MobileNetV2)"),
        Architecture("shufflenetv1", f"{MOBILE}:ShuffleNetV1", "ShuffleNetV1 groups 3 for CIFAR (RepDistiller's ShuffleV1)"),
        Architecture("shufflenetv2", f"{MOBILE}:ShuffleNetV2", "ShuffleNetV2 size 1 for CIFAR (RepDistiller's ShuffleV2)"),
    ]
    archs += [Architecture(f"resnet{d}-cifar", WIDE_STEM, f"ResNet-{d} for CIFAR, 64-channel stem (RepDistiller's ResNet{d})",
                           {"depth": d}) for d in (18, 34, 50)]
    archs.append(Architecture("convnet", CONVNET, "ConvNet-3: 3 x [conv 128, instance norm, ReLU, avgpool] + linear"))
    archs += [Architecture(f"convnet-d{d}", CONVNET, f"ConvNet depth {d}", {"depth": d}) for d in (1, 2, 3, 4)]
    archs += [Architecture(f"convnet-w{w}", CONVNET, f"ConvNet-3 width {w}", {"width": w}) for w in (32, 64, 256)]
    archs += [
        Architecture("convnet-bn", CONVNET, "ConvNet-3 with batch norm", {"norm": "batchnorm"}),
        Architecture("convnet-ln", CONVNET, "ConvNet-3 with layer norm", {"norm": "layernorm"}),
        Architecture("convnet-nonorm", CONVNET, "ConvNet-3 without normalisation", {"norm": "none"}),
        Architecture("mlp", MLP, "two-hidden-layer ReLU MLP (256 units), for quick CPU recipes"),
    ]
    archs += [
        Architecture("vit", VIT, "ViT as in the SPT/LSA paper's CIFAR runs: patch 4, dim 192, depth 9, 12 heads"),
        Architecture("vit-spt-lsa", VIT, "the paper's ViT with shifted patch tokens and locality self-attention",
                     {"spt": True, "lsa": True}),
        Architecture("vit-tiny", VIT, "ViT dim 64 depth 4 patch 2 (small images)", VIT_TINY),
        Architecture("vit-spt-tiny", VIT, "vit-tiny with shifted patch tokenization", {**VIT_TINY, "spt": True}),
        Architecture("vit-lsa-tiny", VIT, "vit-tiny with locality self-attention", {**VIT_TINY, "lsa": True}),
        Architecture("vit-spt-lsa-tiny", VIT, "vit-tiny with SPT and LSA", {**VIT_TINY, "spt": True, "lsa": True}),
    ]
    return archs
