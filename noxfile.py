"""nox sessions: `nox -s tests` (the suite, CPU torch pinned first) and `nox -s lint` (ruff)."""

import nox

nox.options.sessions = ["lint", "tests"]


@nox.session
def tests(session):
    # the pinned CPU build first: a bare `torch` requirement would pull a multi-GB CUDA build
    session.install("torch==2.13.0")
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
def lint(session):
    session.install("ruff")
    session.run("ruff", "check", "toolbox", "plugins", "tests", "benchmarks", "noxfile.py")


@nox.session
def benchmarks(session):
    session.install("torch==2.13.0")
    session.install("-e", ".")
    for script in ("benchmarks/zskt_step.py", "benchmarks/condense_step.py"):
        session.run("python", script)
