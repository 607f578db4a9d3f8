"""Shared evaluation helpers: batched prediction and accuracy in the model's normalised space."""

from __future__ import annotations


def normalize(x, mean, std):
    import torch

    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def predict(model, x, *, mean=None, std=None, device="cpu", batch_size: int = 1000):
    """Logits for raw [0, 1] images ``x`` (normalised here when mean/std are given)."""
    import torch

    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(device)
            if mean is not None:
                xb = normalize(xb, mean, std)
            out.append(model(xb).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def accuracy(model, x, y, *, mean=None, std=None, device="cpu", batch_size: int = 1000) -> float:
    logits = predict(model, x, mean=mean, std=std, device=device, batch_size=batch_size)
    return (logits.argmax(1) == y.cpu()).float().mean().item()


def check_options(options: dict, valid: tuple[str, ...], what: str) -> None:
    """Reject `toolbox evaluate` options this evaluation does not read, instead of ignoring them
    (a mistyped --baselines would otherwise print a result that silently lacks what was asked)."""
    from .errors import UsageError

    unknown = sorted(k for k, v in options.items() if v is not None and k != "metric" and k not in valid)
    if unknown:
        takes = f"it takes {', '.join('--' + k for k in valid)}" if valid else "it takes no options besides --metric"
        raise UsageError(f"{what} does not take {', '.join('--' + k for k in unknown)}; {takes}")


def number_option(options: dict, name: str, default, lo, hi, kind=int):
    """``--name`` of `toolbox evaluate` as an int (or float) in [lo, hi], ``default`` when absent; anything
    else is a usage error naming the option and its range, never a silent default or a crash."""
    from .errors import UsageError

    raw = options.get(name)
    if raw is None:
        return default
    what = f"{'an integer' if kind is int else 'a number'} from {lo} to {hi}"
    try:
        value = kind(str(raw))
    except ValueError:
        raise UsageError(f"--{name} must be {what} (got '{raw}')") from None
    if not lo <= value <= hi:  # also refuses nan
        raise UsageError(f"--{name} must be {what} (got {raw})")
    return value
