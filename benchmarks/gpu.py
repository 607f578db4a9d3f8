"""GPU throughput of the engine, ZSKT, DC/DSA and the evaluator, each beside a straightforward
transcription of the reference loop on the same GPU (wall-clock with CUDA synchronised, fastest of
the timed repeats after one untimed warm-up).

    python benchmarks/gpu.py [--repeats 3] [--compile] [--cpu-smoke]

Cases (sizes of one CUDA GPU; under 8 minutes on an H100):
- supervised WRN-40-2 on CIFAR-shaped random input (3x32x32, batch 128): images/s of one epoch of
  the reference loop (fp32, ``loss.item()`` every step) and of the engine at fp32 / the auto precision
  (bf16 on native-bf16 GPUs, fp16 + GradScaler on older ones), channels_last off and on;
- one ZSKT iteration WRN-40-2 -> WRN-16-1, batch 128: the reference solver's loop vs toolbox_zskt's
  game at the auto precision with channels_last;
- one DC and one DSA outer step at ipc 10 (ConvNet, 3x32x32, 256 real images per class): the
  reference's class loop vs toolbox_condense's loop and vmap forms;
- the evaluator training 10 ConvNets on 100 images for 301 epochs (the DC protocol): one model after
  another with a DataLoader (the reference) vs toolbox_condense.evaluator stacked (vmap) and sequential.

Prints one row per case with the ratios (reference time / ours) and, last, ``speedup: <DC ipc-10
ratio, reference / vmap>``. torch.compile is left off unless ``--compile`` (its first call compiles
for minutes). Without a CUDA device it prints one line saying so and exits 0. ``--cpu-smoke`` runs
every case on the CPU with tiny sizes to check the code paths, not to measure anything.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

FULL = SimpleNamespace(image=32, train=4096, batch=128, wrn_teacher="wrn-40-2", wrn_student="wrn-16-1",
                       zskt_batch=128, real_per_class=256, batch_real=256, ipc=10, eval_epochs=300, eval_models=10)
SMOKE = SimpleNamespace(image=8, train=64, batch=32, wrn_teacher="wrn-16-1", wrn_student="wrn-16-1",
                        zskt_batch=8, real_per_class=12, batch_real=8, ipc=2, eval_epochs=2, eval_models=2)


def timed(device, fn, repeats: int) -> float:
    """Fastest wall-clock seconds of ``repeats`` calls after one untimed warm-up."""
    best = math.inf
    for r in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if r > 0:
            best = min(best, time.perf_counter() - t0)
    return best


def row(name: str, ref: float, ours: dict[str, float], unit: float | None = None) -> None:
    """One line: the reference's time and each of ours with reference / ours (and images/s when ``unit``)."""
    rate = (lambda t: f" {unit / t:9.0f} img/s") if unit else (lambda t: "")
    parts = [f"reference {ref:7.3f} s{rate(ref)}"] + [f"{k} {t:7.3f} s{rate(t)} ({ref / t:5.2f}x)" for k, t in ours.items()]
    print(f"{name:44s} " + " | ".join(parts), flush=True)


# --- supervised WRN on the engine -----------------------------------------------------------------


def supervised_case(device, size, repeats: int, compile_: bool) -> None:
    from toolbox import engine
    from toolbox.models import build_for
    from toolbox.runs import Run
    from toolbox.speed import Speed, resolve

    spec = SimpleNamespace(shape=(3, size.image, size.image), num_classes=10)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(size.train, *spec.shape, generator=g).to(device)
    y = torch.randint(0, 10, (size.train,), generator=g).to(device)
    optim = SimpleNamespace(lr=0.1, momentum=0.9, weight_decay=5e-4)
    steps = math.ceil(size.train / size.batch)

    def fresh():
        torch.manual_seed(0)
        model = build_for(size.wrn_teacher, spec).to(device)
        return model, engine.make_optimizer(model.parameters(), optim)

    def reference():
        model, opt = fresh()
        model.train()
        order = torch.randperm(size.train, generator=g).to(device)
        for i in range(steps):
            idx = order[i * size.batch:(i + 1) * size.batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()

    with tempfile.TemporaryDirectory() as tmp:
        count = iter(range(10**6))

        def ours(amp: str, channels_last: bool):
            def one_epoch():
                d = Path(tmp) / f"run{next(count)}"
                d.mkdir()
                (d / "run.json").write_text("{}")
                run = Run(d, SimpleNamespace(seed=0), "supervised", "train", device)
                model, opt = fresh()
                trainer = engine.Engine(run, model, opt, engine.make_scheduler(opt, "cosine", steps, steps),
                                        speed=Speed(amp=amp, channels_last=channels_last, compile=compile_))
                batches = engine.TensorBatches(x, y, size.batch, run.generator("data"), device)
                trainer.fit(batches, 1, loss=lambda m, a, b: F.cross_entropy(m(a), b), title="gpu benchmark")
            return one_epoch

        ref = timed(device, reference, repeats)
        results = {}
        amps = ("fp32", "auto") if device.type == "cuda" else ("fp32", "bf16")
        for amp in amps:
            for cl in (False, True):
                results[f"{amp}{'+cl' if cl else ''}"] = timed(device, ours(amp, cl), repeats)
    print(f"  engine precision: auto = {resolve(Speed(), device).amp} on this device", flush=True)
    row(f"supervised {size.wrn_teacher}, {size.train} imgs, 1 epoch", ref, results, unit=size.train)
    fp32, auto = results["fp32"], results[f"{amps[1]}"]
    print(f"  {amps[1]} vs fp32 on the engine (channels_last off): {fp32 / auto:.2f}x; "
          f"best with channels_last: {min(results['fp32'], results['fp32+cl']) / min(auto, results[amps[1] + '+cl']):.2f}x",
          flush=True)


# --- ZSKT -----------------------------------------------------------------------------------------


def zskt_case(device, size, repeats: int, compile_: bool) -> None:
    from toolbox_zskt.game import Game
    from zskt_step import build, optimisers, reference_step

    from toolbox.speed import Speed, resolve
    from toolbox.teachers import freeze

    ref_nets = build(size.wrn_teacher, size.wrn_student, size.image, device)
    ours_nets = tuple(copy.deepcopy(m) for m in ref_nets)
    ref_opt = optimisers(ref_nets[0], ref_nets[1], 1000)
    generator, student, teacher = ours_nets
    freeze(teacher)
    speed = resolve(Speed(amp="auto" if device.type == "cuda" else "bf16", compile=compile_), device)
    speed.layout(generator, student, teacher)
    game = Game(generator, student, teacher, *optimisers(generator, student, 1000), autocast=speed.autocast,
                generate=speed.maybe_compile(generator), student_features=speed.maybe_compile(student.forward_features),
                teacher_features=speed.maybe_compile(teacher.forward_features),
                scaler_generator=speed.grad_scaler(), scaler_student=speed.grad_scaler())
    z_rng = torch.Generator(device=device).manual_seed(0)
    z = torch.randn(size.zskt_batch, 100, generator=z_rng, device=device)
    ref = timed(device, lambda: reference_step(*ref_nets, *ref_opt, z), repeats)
    ours = timed(device, lambda: game.step(z), repeats)
    row(f"ZSKT iteration {size.wrn_teacher} -> {size.wrn_student}, batch {size.zskt_batch}", ref,
        {f"toolbox {speed.amp}{'+cl' if speed.channels_last else ''}": ours})


# --- DC / DSA outer step ----------------------------------------------------------------------------


def reference_match_step(build, images_all, indices_class, image_syn, opt_img, ipc, batch_real, families, device):
    """DatasetCondensation main.py's outer step, class by class (DSA: one transformation per class,
    shared by its real and synthetic images), sampling with numpy as the reference does."""
    import numpy as np
    from toolbox_condense import augment

    from toolbox.gradmatch import match_distance

    net = build().to(device)
    params = list(net.parameters())
    loss = torch.tensor(0.0, device=device)
    for c in range(len(indices_class)):
        img_real = images_all[np.random.permutation(indices_class[c])[:batch_real]]
        img_syn = image_syn[c * ipc:(c + 1) * ipc]
        if families is not None:
            one = augment.draw(1, families, img_syn.shape[-1], torch.Generator().manual_seed(c))
            img_real = augment.apply(img_real, one.repeat(img_real.shape[0]))
            img_syn = augment.apply(img_syn, one.repeat(ipc))
        lab_real = torch.ones((img_real.shape[0],), dtype=torch.long, device=device) * c
        lab_syn = torch.ones((ipc,), dtype=torch.long, device=device) * c
        gw_real = [g.detach().clone() for g in torch.autograd.grad(F.cross_entropy(net(img_real), lab_real), params)]
        gw_syn = torch.autograd.grad(F.cross_entropy(net(img_syn), lab_syn), params, create_graph=True)
        loss = loss + match_distance(gw_real, gw_syn)
    opt_img.zero_grad()
    loss.backward()
    opt_img.step()


def condense_case(device, size, repeats: int, dsa: bool) -> float:
    """One outer step (outer_loop 1: the network training between outer steps is the same code on both
    sides); returns reference / vmap."""
    from toolbox_condense import augment
    from toolbox_condense.dc import Matcher, match_step
    from toolbox_condense.sampling import ClassIndex

    from toolbox.models.convnet import ConvNet

    c, h = 3, size.image
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10 * size.real_per_class, c, h, h, generator=g).to(device)
    y = torch.arange(10).repeat_interleave(size.real_per_class).to(device)
    families = augment.parse_strategy(augment.default_strategy("cifar10")) if dsa else None

    def build():
        return ConvNet(10, c, h)

    syn_ref = torch.randn(10 * size.ipc, c, h, h, device=device, requires_grad=True)
    opt_ref = torch.optim.SGD([syn_ref], lr=0.1, momentum=0.5)
    labels = y.tolist()
    indices_class = [[i for i, lab in enumerate(labels) if lab == k] for k in range(10)]
    ref = timed(device, lambda: reference_match_step(build, x, indices_class, syn_ref, opt_ref, size.ipc, size.batch_real,
                                                     families, device), repeats)
    ours = {}
    for name, batched in (("loop", False), ("vmap", True)):
        syn = torch.randn(10, size.ipc, c, h, h, device=device, requires_grad=True)
        opt = torch.optim.SGD([syn], lr=0.1, momentum=0.5)
        m = Matcher(build=build, train_x=x, classes=ClassIndex(y, 10), batch_real=size.batch_real, outer_loop=1,
                    inner_loop=1, lr_net=0.01, batch_train=256, distance="ours", families=families, batched=batched,
                    gen_net=torch.Generator().manual_seed(1), gen_sample=torch.Generator(device=device).manual_seed(2),
                    gen_augment=torch.Generator(device=device).manual_seed(3))
        ours[name] = timed(device, lambda m=m, syn=syn, opt=opt: match_step(syn, opt, m), repeats)
    row(f"{'DSA' if dsa else 'DC'} outer step, ipc {size.ipc}, {size.real_per_class} real/class", ref, ours)
    return ref / ours["vmap"]


# --- evaluator --------------------------------------------------------------------------------------


def evaluator_case(device, size, repeats: int) -> None:
    from toolbox_condense.evaluator import Protocol, model_seed, train_models

    from toolbox.models.convnet import ConvNet

    c, h = 3, size.image
    g = torch.Generator().manual_seed(0)
    images = torch.randn(10 * size.ipc, c, h, h, generator=g).to(device)
    labels = torch.arange(10).repeat_interleave(size.ipc).to(device)
    protocol = Protocol(models=size.eval_models, epochs=size.eval_epochs)
    seeds = [model_seed(0, i) for i in range(size.eval_models)]

    def build():
        return ConvNet(10, c, h)

    def reference():
        from condense_step import reference_evaluation  # benchmarks/ is on the path of a script run from it

        reference_evaluation(build, images, labels, protocol, seeds, device)

    ref = timed(device, reference, repeats)
    ours = {name: timed(device, lambda stacked=stacked: train_models(build, images, labels, protocol, seeds, device,
                                                                        stacked=stacked), repeats)
            for name, stacked in (("stacked", True), ("sequential", False))}
    row(f"evaluator, {size.eval_models} ConvNets, {10 * size.ipc} imgs, {size.eval_epochs + 1} epochs", ref, ours)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="torch.compile the toolbox sides (minutes of compiling)")
    p.add_argument("--cpu-smoke", action="store_true", help="run every case on the CPU with tiny sizes (a code check)")
    args = p.parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("no GPU is present (torch.cuda.is_available() is False): benchmarks/gpu.py measures CUDA devices only")
        return 0
    os.environ.setdefault("TOOLBOX_NO_PROGRESS", "1")
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # zskt_step's reference transcription
    device = torch.device("cpu") if args.cpu_smoke else torch.device("cuda")
    size = SMOKE if args.cpu_smoke else FULL
    repeats = 1 if args.cpu_smoke else args.repeats
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}", flush=True)
    else:
        torch.set_num_threads(1)
        print("CPU smoke run: tiny sizes, the timings mean nothing", flush=True)
    start = time.perf_counter()
    supervised_case(device, size, repeats, args.compile)
    zskt_case(device, size, repeats, args.compile)
    dc = condense_case(device, size, repeats, dsa=False)
    condense_case(device, size, repeats, dsa=True)
    evaluator_case(device, size, repeats)
    print(f"total {time.perf_counter() - start:.0f} s")
    print(f"speedup: {dc:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
