"""The Hugging Face Hub: pull checkpoints and condensed sets, push runs with a card.

All access goes through huggingface_hub (auth, cache, transfer, HF_TOKEN / HF_HOME / HF_ENDPOINT /
HF_HUB_OFFLINE as it documents them). Only safetensors, JSON, YAML, Markdown and PNG files are ever
downloaded, and a repo that offers only pickled weights is refused before anything is fetched.
References: ``hf-hub:org/name[@revision]`` for models, ``hf-hub:datasets/org/name[@revision]`` for
condensed sets; the revision is a branch, tag or commit sha.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

from .artifacts import CONDENSED_FORMAT, PICKLE_SUFFIXES, Source, read_config, read_run_json
from .errors import CheckpointError, RunError, UsageError
from .state import atomic_write_text

ALLOW = ["*.safetensors", "*.json", "*.jsonl", "*.yaml", "*.md", "images/*.png"]
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def parse_ref(ref: str, repo_type: str = "model") -> tuple[str, str | None, str]:
    """'hf-hub:[datasets/]org/name[@rev]' or 'org/name[@rev]' -> (repo_id, revision, repo_type)."""
    text = ref.removeprefix("hf-hub:")
    if text.startswith("datasets/"):
        text, repo_type = text[len("datasets/"):], "dataset"
    repo, _, revision = text.partition("@")
    if not _REPO.match(repo):
        raise UsageError(f"'{ref}' is not a Hub reference; write org/name[@revision] (hf-hub:org/name@rev where a path is expected)")
    return repo, revision or None, repo_type


@contextlib.contextmanager
def hub_errors(repo: str, revision: str | None, repo_type: str):
    """Turn huggingface_hub's exceptions into one line that says what to do."""
    from huggingface_hub import constants, errors

    what = f"{'dataset ' if repo_type == 'dataset' else ''}{repo}" + (f"@{revision}" if revision else "")
    try:
        yield
    except errors.RevisionNotFoundError:
        raise RunError(f"{what}: no such revision on the Hub (a branch, tag or commit sha of {repo})") from None
    except errors.RepositoryNotFoundError:
        raise RunError(f"{what}: repository not found on {constants.ENDPOINT} (or it is private: set HF_TOKEN)") from None
    except errors.LocalEntryNotFoundError:
        raise RunError(f"{what} is not in the local cache and the Hub cannot be used (HF_HUB_OFFLINE is set or the "
                       "network is down); pull it once while online") from None
    except errors.HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):  # a wrong token, or a private or gated repo the token may not read
            raise RunError(f"{what}: the Hub refused access ({status}): it is private or gated, or the token is wrong; "
                           "set HF_TOKEN to a token that can read it") from None
        raise RunError(f"{what}: the Hub answered {str(e).splitlines()[0]}") from None
    except OSError as e:  # connection refused, DNS, timeouts (httpx errors derive from neither; see below)
        raise RunError(f"{what}: cannot reach the Hub at {constants.ENDPOINT} ({type(e).__name__}: {e})") from None
    except Exception as e:
        transport = ("httpx", "httpcore", "requests", "urllib3")  # httpx ships as httpx2 too
        if any(c.__module__.split(".")[0].startswith(transport) for c in type(e).__mro__):
            raise RunError(f"{what}: cannot reach the Hub at {constants.ENDPOINT} ({type(e).__name__}: {e})") from None
        raise


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@contextlib.contextmanager
def _our_progress(what: str):
    """huggingface_hub's tqdm bars ("Fetching 3 files", one per file) print even for a cached
    snapshot and wrap badly on narrow terminals: silence them and show one transient line of ours."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from rich.console import Console

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    quiet = os.environ.get("TOOLBOX_NO_PROGRESS") == "1"
    try:
        with contextlib.nullcontext() if quiet else Console(stderr=True).status(f"{what} (Hub)"):
            yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def resolve_hub_ref(ref: str, repo_type: str = "model") -> Source:
    """Download (or find in the cache) a toolbox artifact; the Source carries the exact commit sha."""
    from huggingface_hub import HfApi, snapshot_download

    repo, revision, repo_type = parse_ref(ref, repo_type)
    with hub_errors(repo, revision, repo_type), _our_progress(f"fetching {repo}@{revision or 'main'}"):
        if _offline():
            path = snapshot_download(repo, repo_type=repo_type, revision=revision, allow_patterns=ALLOW,
                                     local_files_only=True)
            commit = Path(path).name
        else:
            info = HfApi().repo_info(repo, revision=revision, repo_type=repo_type)
            files = [s.rfilename for s in (info.siblings or [])]
            if "config.json" not in files:
                pickles = sorted(f for f in files if f.endswith(PICKLE_SUFFIXES))
                if pickles:
                    raise CheckpointError(f"{repo} offers only pickled weights ({', '.join(pickles)}): toolbox never "
                                          "unpickles downloads (loading a pickle can run any code); ask for safetensors")
                raise CheckpointError(f"{repo} is not a toolbox artifact (no config.json); push one with `toolbox push`")
            # by the user's revision (not info.sha), so the cache learns the branch name for offline use;
            # the snapshot folder is named by the commit actually downloaded
            path = snapshot_download(repo, repo_type=repo_type, revision=revision, allow_patterns=ALLOW)
            commit = Path(path).name
    source = Source(path=Path(path), ref=ref, repo=repo, revision=revision, commit=commit, repo_type=repo_type)
    read_config(source.path)  # one clear line if what arrived is not a toolbox artifact
    return source


# --- push ----------------------------------------------------------------------------------------


def _arxiv_tags(paper: str) -> list[str]:
    return [f"arxiv:{m}" for m in re.findall(r"(\d{4}\.\d{4,5})", paper or "")]


def _card_dataset(ref: str) -> str:
    """How a card names the data: a Hub dataset by its repo id, a local folder by its name only (its path
    means nothing on another machine, and the Hub's metadata wants ids, not paths), a built-in by name."""
    from .data import refs

    base, _ = refs.split_options(ref)
    if base.startswith(refs.HUB_PREFIX):
        return refs.hub_repo(base)[0]
    return refs.slug(base) if ("/" in base or "\\" in base) else base


def build_card(config: dict, run_info: dict, repo: str, paper: str) -> str:
    """Model or dataset card (YAML metadata + text) from the artifact's config and run.json."""
    from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

    method, dataset = config.get("method", "?"), _card_dataset(config.get("dataset", "?"))
    metrics = {k: v for k, v in (config.get("metrics") or {}).items() if isinstance(v, (int, float))}
    teacher = config.get("teacher") or (run_info.get("records") or {}).get("teacher")
    tags = ["toolbox", method, "image-classification", dataset, *_arxiv_tags(paper)]
    condensed = config.get("format") == CONDENSED_FORMAT
    lines = [f"# {repo}", "",
             f"{'A condensed dataset' if condensed else 'A model'} made with [toolbox](https://pypi.org/project/toolbox-compression) "
             f"by the `{method}` method on `{dataset}`.", ""]
    if paper:
        lines += [f"Paper: {paper}", ""]
    if teacher:
        where = f"{teacher.get('repo')}@{teacher.get('commit')}" if teacher.get("repo") else teacher.get("ref", "?")
        lines += [f"Distilled from the teacher `{teacher.get('architecture', '')}` at `{where}`.", ""]
    lines += ["| metric | value |", "|---|---|", *[f"| {k} | {v:.4f} |" for k, v in metrics.items()], "",
              f"Input shape {config.get('input_shape')}, normalisation mean {config.get('mean')} std {config.get('std')}.",
              "", "Reproduce with the `recipe.yaml` in this repository: `toolbox <verb> "
              f"{method} -r recipe.yaml`."]
    body = "\n".join(lines) + "\n"
    extra = {"toolbox": {"method": method, "format": config.get("format"), "commit_of_teacher": (teacher or {}).get("commit")}}
    if condensed:
        data = DatasetCardData(tags=tags, pretty_name=repo, toolbox_metrics=metrics, ipc=config.get("ipc"), **extra)
        return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))
    evals = [EvalResult(task_type="image-classification", dataset_type=dataset, dataset_name=dataset,
                        metric_type=k, metric_value=v) for k, v in metrics.items()]
    data = ModelCardData(library_name="toolbox", tags=tags, datasets=[dataset], model_name=repo,
                         eval_results=evals or None, base_model=(teacher or {}).get("repo"), **extra)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def portable_teacher(config: dict, run_dir: Path, teacher_repo: str | None, push_one) -> dict | None:
    """The student's teacher as another machine can find it: a Hub repo at an exact commit.

    A teacher that came from the Hub is already that (its local cache path is dropped). A local
    teacher is pushed to ``teacher_repo`` first (``push_one(folder, repo)`` -> commit sha) and the
    student's own config.json learns where it went; without ``teacher_repo`` the push is refused,
    since a student whose teacher nobody else can load cannot be evaluated elsewhere."""
    teacher = config.get("teacher")
    if not teacher:
        return None
    kept = {k: v for k, v in teacher.items() if k not in ("path", "ref")}
    if teacher.get("repo") and teacher.get("commit"):
        return kept
    local = teacher.get("path") or teacher.get("ref")
    if not teacher_repo:
        raise UsageError(f"the student's teacher is a local folder ({local}) that no other machine can load; "
                         f"push it too with --push-teacher ORG/NAME")
    if not local or not (Path(local) / "config.json").is_file():
        raise UsageError(f"the student's teacher ({local or 'unrecorded'}) is not on this machine any more, so it "
                         "cannot be pushed; push the student from the machine that has it")
    commit = push_one(Path(local), teacher_repo)
    kept.update(repo=parse_ref(teacher_repo, "model")[0], commit=commit)
    teacher.update(repo=kept["repo"], commit=commit)  # the local student now knows it too
    atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2))
    return kept


def push(run_dir: Path, repo: str, *, private: bool = False, revision: str | None = None, create_pr: bool = False,
         message: str | None = None, teacher_repo: str | None = None):
    """One commit with the artifact, its config, recipe, metrics and a card (never over the user's own).

    A distilled student is pushed only with a teacher other machines can load (see portable_teacher)."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from .registry import current

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    repo_type = "dataset" if config.get("format") == CONDENSED_FORMAT else "model"
    repo, _, _ = parse_ref(repo, repo_type)
    weights = run_dir / config.get("weights", "model.safetensors")
    if not weights.is_file():
        raise CheckpointError(f"{run_dir} has no {weights.name}: push a finished run")
    teacher = portable_teacher(config, run_dir, teacher_repo, lambda folder, to: push(
        folder, to, private=private, message=f"toolbox push: the teacher of {repo}").oid)
    run_info = read_run_json(run_dir) if (run_dir / "run.json").is_file() else {}  # a garbage one: one line
    files = [weights, run_dir / "config.json"] + [run_dir / n for n in ("recipe.yaml", "metrics.jsonl", "summary.json")
                                                   if (run_dir / n).is_file()]
    files += [p for p in sorted((run_dir / "images").glob("*.png")) if p.stat().st_size < 5_000_000]
    try:
        paper = current().method(config.get("method", "")).paper
    except UsageError:
        paper = ""
    api = HfApi()
    with hub_errors(repo, revision, repo_type), _our_progress(f"{repo}: pushing {run_dir}"):
        api.create_repo(repo, repo_type=repo_type, private=private, exist_ok=True)
        if revision and not create_pr:
            api.create_branch(repo, branch=revision, repo_type=repo_type, exist_ok=True)
        ops = [CommitOperationAdd(path_in_repo=str(p.relative_to(run_dir)), path_or_fileobj=str(p)) for p in files]
        if teacher is not None:
            config = {**config, "teacher": teacher}
            ops[1] = CommitOperationAdd(path_in_repo="config.json", path_or_fileobj=json.dumps(config, indent=2).encode())
        if not api.file_exists(repo, "README.md", repo_type=repo_type, revision=revision if not create_pr else None):
            card = build_card(config, run_info, repo, paper)
            ops.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode()))
        return api.create_commit(repo, ops, commit_message=message or f"toolbox push: {config.get('method')} on "
                                 f"{config.get('dataset')}", repo_type=repo_type, revision=revision, create_pr=create_pr)
