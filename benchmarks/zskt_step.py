"""Time one ZSKT iteration: this implementation vs a straightforward port of the reference loop.

The reference (polo5/ZeroShotKnowledgeTransfer, solver.py) regenerates x = G(z) with autograd for the
generator step and for each of the 10 student steps, and leaves the teacher's weights trainable, so
every backward pass also computes teacher (generator step) and generator (student steps) weight
gradients that are thrown away. toolbox_zskt.game.Game does the same maths with x generated once and
detached for the student steps, the teacher's outputs computed once, and no unused weight gradients.

Both run on identically initialised networks (WRN-40-2 -> WRN-16-1 by default), batch 128, 32x32,
on the same thread count, one after the other in this process. Prints CPU-seconds per iteration
(wall seconds too on CUDA) and ends with `speedup: <float>` (reference time / this implementation's).

    python benchmarks/zskt_step.py [--threads 1] [--batch 128] [--iters 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from toolbox_zskt.game import Game
from toolbox_zskt.generator import Generator

from toolbox.losses import attention_loss, kl_mean
from toolbox.registry import current
from toolbox.teachers import freeze


def reference_step(generator, student, teacher, opt_g, opt_s, sched_g, sched_s, z, beta=250.0, clip=5.0,
                   generator_steps=1, student_steps=10):
    """One iteration as the reference solver runs it (teacher in eval mode but not frozen)."""
    for i in range(generator_steps + student_steps):
        x = generator(z)
        if i < generator_steps:
            s_logits, _ = student.forward_features(x)
            t_logits, _ = teacher.forward_features(x)
            loss = -kl_mean(s_logits, t_logits)
            opt_g.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(generator.parameters(), clip)
            opt_g.step()
        else:
            if i == generator_steps:
                with torch.no_grad():
                    t_logits, t_feats = teacher.forward_features(x)
            s_logits, s_feats = student.forward_features(x)
            loss = kl_mean(s_logits, t_logits) + sum(beta * attention_loss(s, t) for s, t in zip(s_feats, t_feats))
            opt_s.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), clip)
            opt_s.step()
    sched_s.step()
    sched_g.step()


def build(teacher_arch: str, student_arch: str, image_size: int, device, seed: int = 0):
    torch.manual_seed(seed)
    arch = current().architecture
    teacher = arch(teacher_arch)(num_classes=10, in_channels=3, image_size=image_size).to(device).eval()
    student = arch(student_arch)(num_classes=10, in_channels=3, image_size=image_size).to(device).train()
    generator = Generator(100, out_channels=3, image_size=image_size).to(device).train()
    return generator, student, teacher


def optimisers(generator, student, iterations: int):
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-3)
    opt_s = torch.optim.Adam(student.parameters(), lr=2e-3)
    return (opt_g, opt_s, torch.optim.lr_scheduler.CosineAnnealingLR(opt_g, iterations),
            torch.optim.lr_scheduler.CosineAnnealingLR(opt_s, iterations))


def timed(device, fn, *args):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    cpu, wall = time.process_time(), time.perf_counter()
    fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.process_time() - cpu, time.perf_counter() - wall


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--iters", type=int, default=1, help="timed iterations of each implementation")
    p.add_argument("--device", default="cpu")
    p.add_argument("--teacher", default="wrn-40-2")
    p.add_argument("--student", default="wrn-16-1")
    p.add_argument("--image-size", type=int, default=32)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    ref_nets = build(args.teacher, args.student, args.image_size, device)
    ours_nets = tuple(copy.deepcopy(m) for m in ref_nets)
    ref_opt = optimisers(ref_nets[0], ref_nets[1], 1000)
    ours_opt = optimisers(ours_nets[0], ours_nets[1], 1000)
    freeze(ours_nets[2])
    game = Game(*ours_nets, *ours_opt)
    z_rng = torch.Generator(device=device).manual_seed(0)

    ref_cpu = ref_wall = ours_cpu = ours_wall = 0.0
    for _ in range(args.iters):
        z = torch.randn(args.batch, 100, generator=z_rng, device=device)
        c, w = timed(device, reference_step, *ref_nets, *ref_opt, z)
        ref_cpu, ref_wall = ref_cpu + c, ref_wall + w
        c, w = timed(device, game.step, z)
        ours_cpu, ours_wall = ours_cpu + c, ours_wall + w
    drift = max((a - b).abs().max().item() for a, b in zip(ref_nets[1].parameters(), ours_nets[1].parameters()))

    n = args.iters
    print(f"ZSKT iteration, {args.teacher} -> {args.student}, batch {args.batch}, {args.image_size}x{args.image_size}, "
          f"{args.threads} thread(s), {device}, {n} iteration(s)")
    print(f"  reference loop  : {ref_cpu / n:8.2f} CPU-s/iter  {ref_wall / n:8.2f} wall-s/iter")
    print(f"  toolbox_zskt    : {ours_cpu / n:8.2f} CPU-s/iter  {ours_wall / n:8.2f} wall-s/iter")
    print(f"  max |student weight difference| after {n} iteration(s): {drift:.2e}")
    speedup = (ref_wall / ours_wall) if device.type == "cuda" else (ref_cpu / ours_cpu)
    print(f"speedup: {speedup:.2f}")
    return speedup


if __name__ == "__main__":
    main()
