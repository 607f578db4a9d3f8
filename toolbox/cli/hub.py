"""pull / push: toolbox artifacts on the Hugging Face Hub (imports huggingface_hub only when run)."""

from __future__ import annotations

import click


@click.command()
@click.argument("ref")
@click.option("--repo-type", type=click.Choice(["model", "dataset"]), default="model", show_default=True,
              help="dataset for condensed sets (or write datasets/org/name).")
@click.option("--debug", is_flag=True)
@click.pass_context
def pull(ctx, ref, repo_type, debug):
    """Download a toolbox checkpoint or condensed set: org/name[@revision]. Prints its path and commit."""
    from ..hub import resolve_hub_ref

    ctx.meta["debug"] = debug
    source = resolve_hub_ref(ref if ref.startswith("hf-hub:") else f"hf-hub:{ref}", repo_type=repo_type)
    click.echo(f"path:   {source.path}\ncommit: {source.commit}\nuse it: hf-hub:"
               f"{'datasets/' if source.repo_type == 'dataset' else ''}{source.repo}@{source.commit}")


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("repo")
@click.option("--private", is_flag=True, help="Create the repository as private.")
@click.option("--revision", help="Branch to commit to (created if needed).")
@click.option("--create-pr", is_flag=True, help="Open a pull request instead of committing to the branch.")
@click.option("--commit-message", "-m", help="Commit message.")
@click.option("--push-teacher", "teacher_repo", metavar="ORG/NAME",
              help="For a distilled student whose teacher is local: push the teacher there first and record it.")
@click.option("--debug", is_flag=True)
@click.pass_context
def push(ctx, run_dir, repo, private, revision, create_pr, commit_message, teacher_repo, debug):
    """Upload a finished run (model or condensed set) to REPO as one commit, with a card.

    A distilled student records its teacher as a Hub repo at an exact commit, so it can be evaluated
    anywhere: a local teacher is pushed too (--push-teacher), or the push is refused.
    """
    from ..hub import push as push_run

    ctx.meta["debug"] = debug
    info = push_run(run_dir, repo, private=private, revision=revision, create_pr=create_pr, message=commit_message,
                    teacher_repo=teacher_repo)
    click.echo(f"commit: {info.oid}\nurl:    {info.pr_url or info.commit_url}")
