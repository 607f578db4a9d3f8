"""The DataLoader batch source (toolbox.engine.LoaderBatches) draws its order exactly as TensorBatches does:
the same batches, the same trained weights, with or without worker processes, and no draw from the
global RNG; the supervised recipe selects it with data.loader=stream."""

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch.utils.data import TensorDataset

from toolbox import data, engine
from toolbox.cli import cli
from toolbox.errors import UsageError
from toolbox.runs import Run

CPU = torch.device("cpu")


def digits():
    real = data.load("digits")
    return real.normalize(real.train_x), real.train_y


def epochs_of(batches, epochs):
    return [[(x.clone(), y.clone()) for x, y in batches.epoch(e)] for e in range(epochs)]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for epoch_a, epoch_b in zip(a, b):
        assert len(epoch_a) == len(epoch_b)
        for (xa, ya), (xb, yb) in zip(epoch_a, epoch_b):
            assert xa.dtype == xb.dtype and ya.dtype == yb.dtype
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_loader_gives_tensor_batches_order_and_leaves_the_global_rng_alone(workers):
    x, y = digits()
    memory = engine.TensorBatches(x, y, 100, torch.Generator().manual_seed(4), CPU)
    stream = engine.LoaderBatches(TensorDataset(x, y), 100, torch.Generator().manual_seed(4), CPU, num_workers=workers)
    assert len(stream) == len(memory) == 14  # 1347 training images: 13 full batches and one of 47
    expected = epochs_of(memory, 3)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    got = epochs_of(stream, 3)
    assert torch.equal(torch.get_rng_state(), before)  # the loader's worker seeds come from its own generator
    assert_same_batches(got, expected)
    assert not torch.equal(got[0][0][1], got[1][0][1])  # a new order every epoch


def test_the_order_is_the_generators_alone():
    """A generator restored to a saved state gives the rest of the stream (what resume relies on)."""
    x, y = digits()
    g = torch.Generator().manual_seed(4)
    stream = engine.LoaderBatches(TensorDataset(x, y), 256, g, CPU, num_workers=2)
    epochs_of(stream, 1)
    saved = g.get_state()
    rest = epochs_of(stream, 2)
    g.set_state(saved)
    assert_same_batches(epochs_of(engine.LoaderBatches(TensorDataset(x, y), 256, g, CPU), 2), rest)


def train(tmp_path, name, make):
    """Three epochs of an MLP on digits whose loss also draws from the global RNG (dropout), as mixup does."""
    (tmp_path / name).mkdir()
    (tmp_path / name / "run.json").write_text("{}")
    run = Run(tmp_path / name, SimpleNamespace(seed=0), "test", "train", CPU)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    batches = make(*digits(), run.generator("data"))
    sched = engine.make_scheduler(opt, "cosine", 3 * len(batches), len(batches))

    def loss(forward, x, y):
        return F.cross_entropy(F.dropout(forward(x), 0.2), y)

    metrics = engine.Engine(run, model, opt, sched).fit(batches, 3, loss=loss)
    return model, metrics


def test_training_on_the_loader_gives_the_weights_of_tensor_batches_bit_for_bit(tmp_path):
    memory, m1 = train(tmp_path, "memory", lambda x, y, g: engine.TensorBatches(x, y, 64, g, CPU))
    stream, m2 = train(tmp_path, "stream", lambda x, y, g: engine.LoaderBatches(TensorDataset(x, y), 64, g, CPU))
    assert m1 == m2
    for a, b in zip(memory.parameters(), stream.parameters()):
        assert torch.equal(a, b)


def test_a_recipe_selects_the_source():
    x, y = torch.zeros(10, 2), torch.zeros(10, dtype=torch.long)
    section = engine.BatchSource(batch_size=4, loader="stream", workers=1)
    stream = engine.make_batches(x, y, section, torch.Generator(), CPU)
    assert isinstance(stream, engine.LoaderBatches) and stream.loader.num_workers == 1 and len(stream) == 3
    assert isinstance(engine.make_batches(x, y, engine.BatchSource(), torch.Generator(), CPU), engine.TensorBatches)
    with pytest.raises(UsageError, match="data.workers=2 needs data.loader=stream"):
        engine.BatchSource(workers=2)


def history(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k != "time"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_supervised_with_a_stream_of_two_workers_logs_the_metrics_of_memory(tmp_path):
    args = ["train", "supervised", "--dataset", "digits", "--arch", "mlp", "--epochs", "3", "--threads", "1",
            "--device", "cpu"]
    for name, extra in (("memory", []), ("stream", ["-o", "data.loader=stream", "-o", "data.workers=2"])):
        result = CliRunner().invoke(cli, [*args, *extra, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    assert history(tmp_path / "stream") == history(tmp_path / "memory") and len(history(tmp_path / "memory")) == 3
    assert "loader: stream" in (tmp_path / "stream" / "recipe.yaml").read_text()
    result = CliRunner().invoke(cli, [*args, "-o", "data.workers=2", "--out", str(tmp_path / "refused")])
    assert result.exit_code == 2 and "set data.loader=stream or data.workers=0" in result.stderr
