"""The ``toolbox`` command: a click group whose verbs dispatch to method plugins.

Only click is imported here; each verb imports what it needs when it runs, so ``toolbox --help``
stays fast and never imports torch.
"""

from __future__ import annotations

import os
import sys

import click

from .. import DISTRIBUTION
from ..errors import ToolboxError


class ToolboxGroup(click.Group):
    """Turns ToolboxError into one line on stderr and its exit code (traceback only with --debug),
    and click's own usage errors into one line too, instead of a usage block plus the error."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as e:
            _usage_line(e)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as e:
            _usage_line(e)
        except ToolboxError as e:
            if debug_enabled(ctx):
                raise
            _say(f"error: {e}", "rank" if _another_rank_stopped(e) else "toolbox", e.exit_code)
            sys.exit(e.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            _say("error: interrupted", "toolbox", 130)
            sys.exit(130)
        except OSError as e:
            # a path the user named cannot be read or written (permissions, a read-only or missing
            # folder, a full disk): the system's reason and the path are the whole story
            if debug_enabled(ctx) or _strict() or not e.filename:
                raise
            _say(f"error: cannot use {e.filename}: {e.strerror or e}; choose another path or fix its permissions",
                 "toolbox", 1)
            sys.exit(1)
        except Exception as e:
            if debug_enabled(ctx) or _strict():  # strict mode: a crashing plugin keeps its traceback
                raise
            first = str(e).splitlines()[0] if str(e) else ""
            _say(f"error: unexpected {type(e).__name__}: {first} (run with --debug for the traceback)", "unexpected", 1)
            sys.exit(1)

    def list_commands(self, ctx):
        return list(self.commands)  # in the order they were added: the workflow order


def _say(line: str, kind: str, code: int) -> None:
    """Print an error line, or hand it to the --nproc launcher when this process is one of its ranks
    (it prints the one line that explains the job). A rank other than 0 that stopped only because
    another did stays silent."""
    from ..launch import report

    if report(line, kind, code):
        return
    if kind == "rank" and os.environ.get("RANK", "0") != "0":
        return
    click.echo(line, err=True)


def _another_rank_stopped(e) -> bool:
    from ..distributed import RankError

    return isinstance(e, RankError)


def _usage_line(e: click.UsageError):
    command = e.ctx.command_path if e.ctx is not None else "toolbox"
    message = " ".join(e.format_message().split())
    click.echo(f"error: {message} (see `{command} --help`)", err=True)
    sys.exit(e.exit_code)


def _strict() -> bool:
    from ..plugins import strict

    return strict()


def debug_enabled(ctx) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("debug")) or os.environ.get("TOOLBOX_DEBUG") == "1" or bool(ctx.meta.get("debug"))


@click.group(cls=ToolboxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name=DISTRIBUTION, prog_name="toolbox")
def cli(debug):
    """Model compression and data-efficient learning methods, as plugins.

    \b
    toolbox train supervised --dataset digits     train a classifier (a teacher)
    toolbox train zskt                            zero-shot knowledge transfer
    toolbox condense digits                       dataset condensation
    toolbox evaluate runs/<run>                   test a run's model or condensed set
    toolbox show runs/<run>                       a run's results, what they mean, its images
    toolbox methods | plugins | recipes | models | datasets
    """


def _register():
    from . import inspect, operate, packages

    for command in (operate.train, operate.distill, operate.condense, operate.evaluate, operate.export, operate.import_checkpoint,
                    inspect.plugins, inspect.methods, inspect.models, inspect.datasets, inspect.recipes, inspect.show, inspect.compare,
                    packages.install, packages.uninstall):
        cli.add_command(command)
    try:
        from . import hub
    except ImportError:  # the Hub verbs are optional at import time; their module imports no torch
        return
    cli.add_command(hub.pull)
    cli.add_command(hub.push)


_register()


def main():
    cli(prog_name="toolbox")
