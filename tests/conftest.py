"""Test isolation: every test writes only under tmp, reads no network, and runs torch on one thread."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _toolbox_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("toolbox-home")
    saved = {k: os.environ.get(k) for k in ("TOOLBOX_HOME", "TOOLBOX_DATA", "TOOLBOX_NO_DOWNLOAD", "TOOLBOX_NO_PROGRESS")}
    os.environ.update(TOOLBOX_HOME=str(home), TOOLBOX_DATA=str(home / "data"), TOOLBOX_NO_DOWNLOAD="1",
                      TOOLBOX_NO_PROGRESS="1")
    import torch

    torch.set_num_threads(1)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Default run directories (runs/...) land in the test's tmp folder."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def digits_teacher():
    """A WRN-16-2 digits teacher (the default recipe), trained once per test session."""
    from toolbox.runs import cached_run

    return cached_run("train", "supervised", recipe="supervised/digits", device="cpu")
