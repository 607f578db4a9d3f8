"""Knowledge distillation baselines: Hinton KD, attention transfer, few-shot KD+AT."""
