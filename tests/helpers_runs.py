"""Checks on what every run leaves for a person to look at."""

from pathlib import Path

from toolbox.curves import read_series


def assert_curves(run_dir, *series: str) -> None:
    """images/curves.png is a real, non-blank picture, drawn from metrics.jsonl holding ``series``."""
    import matplotlib.image

    path = Path(run_dir) / "images" / "curves.png"
    assert path.is_file(), f"{path} missing"
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.std() > 0.01, pixels.shape
    logged = read_series(Path(run_dir) / "metrics.jsonl")
    assert set(series) <= set(logged), (series, sorted(logged))
