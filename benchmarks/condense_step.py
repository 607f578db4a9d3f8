"""CPU-seconds of one DC outer iteration and of one evaluation of N models: toolbox_condense
against a straightforward implementation of the reference loops (DatasetCondensation main.py /
utils.py: numpy per-class sampling, a Python loop over classes, models trained one at a time with a
DataLoader), on the same data, same network and same thread count (1).

    python benchmarks/condense_step.py [--repeats 3] [--eval-epochs 30]

Prints one row per case, the arithmetic each DC case does (counted with torch's FlopCounterMode) and
the rate both sides reach, and, last, ``speedup: <float>`` for the DC outer iteration on digits at ipc 1.

What it showed on the 2-core CPU this project is developed on (1 thread, AVX-512), measured while
our ConvNet still left 8x8 digits unpadded (maps 8-4-2-1): even an 8x8 input cost ~3 MMAC per
image, and DC at ipc 1 pushes all ~135 real images of every class through forward and backward,
about 24 GFLOP per outer iteration; both sides ran that at 40-50 GFLOP/s, so kernels, not per-call
overhead, set the time and batching the Python loops away cannot buy more than a few percent there.
A torch.profiler trace of the toolbox iteration (~450 ms at ipc 1) put the convolution kernels
(forward ~100 GFLOP/s, and convolution_backward) at ~245 ms, avg-pool forward/backward at ~65 ms and
group norm at ~50 ms; the reference took ~490 ms, so with the same arithmetic no rewrite of the loop
can pass ~2x here. The batched forms pay where calls are small relative to the hardware (GPUs, tiny
evaluation sets). With the reference's padding (any one-channel input: 8x8 digits meet the network
as 12x12, maps 12-6-3-1) a digits image costs ~6.8 MMAC (13.6 MFLOP forward) and a DC outer
iteration at ipc 1 ~56 GFLOP (FlopCounterMode), 2.3x the arithmetic above; the seconds above were
not re-measured, but the same kernel-bound reasoning holds with more work per call.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from toolbox_condense.dc import Matcher, match_step
from toolbox_condense.evaluator import Protocol, model_seed, train_models
from toolbox_condense.sampling import ClassIndex

from toolbox.gradmatch import match_distance
from toolbox.models.convnet import ConvNet


def reference_dc_iteration(build, images_all, indices_class, image_syn, opt_img, ipc, batch_real):
    """main.py's loop body for ipc with outer_loop 1 (ipc 1) or one outer step (ipc 10)."""
    num_classes = len(indices_class)
    net = build()
    params = list(net.parameters())
    loss = torch.tensor(0.0)
    for c in range(num_classes):
        img_real = images_all[np.random.permutation(indices_class[c])[:batch_real]]
        lab_real = torch.ones((img_real.shape[0],), dtype=torch.long) * c
        gw_real = [g.detach().clone() for g in torch.autograd.grad(F.cross_entropy(net(img_real), lab_real), params)]
        img_syn = image_syn[c * ipc:(c + 1) * ipc]
        lab_syn = torch.ones((ipc,), dtype=torch.long) * c
        gw_syn = torch.autograd.grad(F.cross_entropy(net(img_syn), lab_syn), params, create_graph=True)
        loss = loss + match_distance(gw_real, gw_syn)
    opt_img.zero_grad()
    loss.backward()
    opt_img.step()


def reference_evaluation(build, images, labels, protocol, seeds, device="cpu"):
    """utils.evaluate_synset, once per model, with a DataLoader per model (benchmarks/gpu.py runs it
    on a GPU too)."""
    for s in seeds:
        torch.manual_seed(s)
        net = build().to(device)
        lr = protocol.lr
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=256, shuffle=True)
        for ep in range(protocol.epochs + 1):
            for x, y in loader:
                loss = F.cross_entropy(net(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            if ep == protocol.epochs // 2 + 1:
                lr *= 0.1
                opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)


def cpu_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (allocator, first-call dispatch)
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats


def dc_flops(build, x, y, ipc, batch_real) -> float:
    """Floating-point operations of one reference DC outer iteration (same for both sides)."""
    from torch.utils.flop_counter import FlopCounterMode

    syn = torch.randn(10 * ipc, *x.shape[1:], requires_grad=True)
    opt = torch.optim.SGD([syn], lr=0.1)
    labels = y.tolist()
    indices_class = [[i for i, lab in enumerate(labels) if lab == k] for k in range(10)]
    with FlopCounterMode(display=False) as counter:
        reference_dc_iteration(build, x, indices_class, syn, opt, ipc, batch_real)
    return float(counter.get_total_flops())


def dc_case(x, y, shape, ipc, batch_real, repeats, batched=False):
    c, h, _ = shape
    build = lambda: ConvNet(10, c, h)  # noqa: E731
    syn_ref = torch.randn(10 * ipc, c, h, h, requires_grad=True)
    opt_ref = torch.optim.SGD([syn_ref], lr=0.1, momentum=0.5)
    images_all, labels = x, y.tolist()
    indices_class = [[i for i, lab in enumerate(labels) if lab == k] for k in range(10)]
    np.random.seed(0)
    ref = cpu_seconds(lambda: reference_dc_iteration(build, images_all, indices_class, syn_ref, opt_ref, ipc, batch_real), repeats)
    syn = torch.randn(10, ipc, c, h, h, requires_grad=True)
    opt = torch.optim.SGD([syn], lr=0.1, momentum=0.5)
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    # one outer step (outer_loop 1): the reference's network training between outer steps is the
    # same code in both and is left out of the comparison
    m = Matcher(build, x, ClassIndex(y, 10), batch_real, 1, 1, 0.01, 256, "ours", None, batched, *gens)
    ours = cpu_seconds(lambda: match_step(syn, opt, m), repeats)
    gflop = dc_flops(build, x, y, ipc, batch_real) / 1e9
    print(f"    {gflop:.1f} GFLOP per iteration: reference {gflop / ref:.0f} GFLOP/s, toolbox {gflop / ours:.0f} GFLOP/s")
    return ref, ours


def eval_case(x, y, shape, ipc, models, epochs, repeats):
    c, h, _ = shape
    build = lambda: ConvNet(10, c, h)  # noqa: E731
    idx = torch.cat([(y == k).nonzero().squeeze(1)[:ipc] for k in range(10)])
    images, labels = x[idx], y[idx]
    protocol = Protocol(models=models, epochs=epochs)
    seeds = [model_seed(0, i) for i in range(models)]
    ref = cpu_seconds(lambda: reference_evaluation(build, images, labels, protocol, seeds), repeats)
    ours = cpu_seconds(lambda: train_models(build, images, labels, protocol, seeds, "cpu"), repeats)
    return ref, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eval-epochs", type=int, default=30, help="epochs per evaluated model (paper: 300/1000)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from toolbox.data import load

    data = load("digits")
    dx, dy = data.normalize(data.train_x), data.train_y
    g = torch.Generator().manual_seed(0)
    cx = torch.randn(10 * 128, 3, 32, 32, generator=g)  # CIFAR-shaped stand-in: 128 images per class
    cy = torch.arange(10).repeat_interleave(128)
    rows = []
    for name, fn in [
        ("DC outer iteration, digits 1x8x8, ipc 1", lambda: dc_case(dx, dy, (1, 8, 8), 1, 256, args.repeats)),
        ("DC outer iteration, digits 1x8x8, ipc 10", lambda: dc_case(dx, dy, (1, 8, 8), 10, 256, args.repeats)),
        ("DC outer iteration, digits, ipc 1, vmap over classes", lambda: dc_case(dx, dy, (1, 8, 8), 1, 256, args.repeats, batched=True)),
        ("DC outer iteration, 3x32x32, ipc 1, 128 real/class", lambda: dc_case(cx, cy, (3, 32, 32), 1, 128, 2)),
        (f"evaluate 10 models, digits, ipc 1, {args.eval_epochs + 1} epochs", lambda: eval_case(dx, dy, (1, 8, 8), 1, 10, args.eval_epochs, args.repeats)),
        (f"evaluate 10 models, digits, ipc 10, {args.eval_epochs + 1} epochs", lambda: eval_case(dx, dy, (1, 8, 8), 10, 10, args.eval_epochs, 1)),
        ("evaluate 10 models, 3x32x32, ipc 10, 6 epochs", lambda: eval_case(cx, cy, (3, 32, 32), 10, 10, 5, 1)),
    ]:
        ref, ours = fn()
        rows.append((name, ref, ours))
        print(f"{name:58s} reference {ref:8.3f} s   toolbox {ours:8.3f} s   ratio {ref / ours:5.2f}x", flush=True)
    print(f"speedup: {rows[0][1] / rows[0][2]:.3f}")


if __name__ == "__main__":
    main()
