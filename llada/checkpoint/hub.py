"""The Hugging Face Hub: a Hub id resolved to a downloaded model directory, and a model directory
uploaded to a repository (the files a model opens from and the records its card cites, nothing else).

Downloads fetch only what loading reads; an upload is one commit. Every failure (offline, no token,
no permission, no such repository) is one `UserError` line saying what to do.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from llada.checkpoint.card import card_text
from llada.checkpoint.layout import (
    ADAPTER_DIR,
    ADAPTER_WEIGHTS,
    CARD_NAME,
    CONFIG_NAME,
    EVAL_RESULTS,
    GENERATION_CONFIG_NAME,
    INDEX_NAME,
    TRAINING_CONFIG_NAME,
    auto_map_modules,
    check_entries,
    check_model_file,
    is_hub_id,
    optional_json,
    read_config,
    weight_files,
)
from llada.checkpoint.options import LoadOptions
from llada.config import ModelConfig
from llada.errors import ModelDirError, UserError

logger = logging.getLogger(__name__)

# What a download fetches of a Hub repository: what loading reads, no pickles or other weights.
DOWNLOADED = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.model", "*.txt"]


def resolve_dir(path: str | Path, options: LoadOptions | None = None) -> Path:
    """The local model directory of `path`: a directory as it is, or a Hub id (owner/name) downloaded
    as `options` say (their revision) into the Hugging Face cache; checked by `layout.check_entries`
    either way. Raises ModelDirError for anything else, and for a revision given with a local directory."""
    opts = options or LoadOptions()
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ModelDirError(f"path must be a model directory or a Hugging Face Hub id (org/name), got {path!r}")
    p = Path(path).expanduser()
    if p.is_dir():
        if opts.revision is not None:
            raise ModelDirError(f"{p} is a local directory; --revision applies to a Hugging Face Hub id")
        check_entries(p)
        return p
    if p.exists():
        raise ModelDirError(f"{p} is a file; a model directory (with {CONFIG_NAME} and safetensors) is needed")
    text = str(path)
    if not is_hub_id(text):
        raise ModelDirError(f"{p}: no such directory (expected a model directory with {CONFIG_NAME})")
    from huggingface_hub import snapshot_download

    try:
        root = Path(snapshot_download(text, revision=opts.revision, cache_dir=opts.cache_dir,
                                      local_files_only=opts.local_files_only, allow_patterns=DOWNLOADED))
    except Exception as e:  # noqa: BLE001 - network and auth errors vary by hub version
        raise _hub_error(text, opts.revision, e) from None
    check_entries(root)
    return root


def hub_config(repo: str, revision: str | None) -> ModelConfig:
    """config.json of a Hub repository, downloaded alone."""
    from huggingface_hub import hf_hub_download

    try:
        path = Path(hf_hub_download(repo, CONFIG_NAME, revision=revision))
    except Exception as e:  # noqa: BLE001 - network and auth errors vary by hub version
        raise _hub_error(repo, revision, e) from None
    return read_config(path.parent)


def _hub_error(repo: str, revision: str | None, e: Exception) -> ModelDirError:
    at = f" at revision {revision!r}" if revision else ""
    return ModelDirError(f"{repo!r}{at} is not a local directory and could not be fetched from the Hugging Face "
                         f"Hub ({type(e).__name__}: {e})")


# ------------------------------------------------------------------------------------------ upload


def push(model: str, repo: str, revision: str | None = None, private: bool = False,
         message: str | None = None) -> None:
    """Upload model directory `model` to Hub repository `repo` (created if needed; `private` applies
    to a new one) in one commit on branch `revision` (created if missing; None: main): the files of
    `upload_files` and a card naming the repository; the directory itself is left as it is. Raises
    UserError when not logged in, and for each way the Hub refuses (`_push_error`)."""
    import huggingface_hub
    from huggingface_hub import CommitOperationAdd

    check_repo_id(repo)
    root = Path(model).expanduser()
    if not root.is_dir():
        raise ModelDirError(f"{model}: no such directory; `llada push` uploads a local model directory")
    if not (root / CONFIG_NAME).exists():
        raise ModelDirError(f"{root}: no {CONFIG_NAME}; `llada push` uploads a model directory")
    files = upload_files(root)
    read_config(root)  # refuse to upload a directory that would not open
    card = card_text(root, repo).encode("utf-8")
    if huggingface_hub.get_token() is None:
        raise UserError("not logged in to the Hugging Face Hub: log in with `hf auth login` or set HF_TOKEN "
                        "to a token that may write, then push again")
    try:
        operations = [CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(root / n)) for n in files]
        operations.append(CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card))
        api = huggingface_hub.HfApi()
        api.create_repo(repo, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo, branch=revision, exist_ok=True)
        api.create_commit(repo, operations, commit_message=message or f"Upload {root.name} (llada)",
                          revision=revision)
    except Exception as e:  # noqa: BLE001 - network, auth and permission errors vary by hub version
        raise _push_error(root, repo, e) from None
    logger.info("pushed %s to %s%s", root, repo, f" (branch {revision})" if revision else "")


def check_repo_id(repo: str) -> None:
    """A UserError unless `repo` is a Hub repository id (`owner/name` or `name`)."""
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
    except ValueError:  # HFValidationError
        raise UserError(f"{repo!r} is not a Hugging Face Hub repository id: use owner/name, each part letters, "
                        "digits, '-', '_' and '.' (not first or last), at most 96 characters") from None


# What `push` uploads of a model directory besides its safetensors: the files a model is opened
# from, and the records its card cites. Pickles, optimizer state, notes and the like stay home.
UPLOADED = (CONFIG_NAME, GENERATION_CONFIG_NAME, INDEX_NAME, TRAINING_CONFIG_NAME, EVAL_RESULTS,
            "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
            "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
            f"{ADAPTER_DIR}/adapter_config.json", f"{ADAPTER_DIR}/{ADAPTER_WEIGHTS}")


def upload_files(root: Path) -> list[str]:
    """The files of model directory `root` that `push` uploads (its README.md is generated apart):
    the safetensors its index names (or model.safetensors), the `UPLOADED` files it has, and the
    Python modules its `auto_map` names that it holds (a checkpoint with its own modeling code).
    Each must be a regular file whose real path is inside `root`, by the check loading makes
    (`layout.check_model_file`): a symlink to a file outside (a secret) is one ModelDirError,
    raised before anything is uploaded."""
    check_entries(root)
    names = [*weight_files(root), *(n for n in UPLOADED if (root / n).is_file())]
    for config in (CONFIG_NAME, "tokenizer_config.json"):
        names += [f"{m}.py" for m in auto_map_modules(optional_json(root / config)) if (root / f"{m}.py").is_file()]
    for name in names:
        check_model_file(root / name, root)
    return sorted(set(names))


def _push_error(root: Path, repo: str, e: Exception) -> UserError:
    """What stopped an upload, in one line: the token refused, no permission, the Hub out of reach, or else."""
    where = f"could not push {root} to {repo!r}"
    response = getattr(e, "response", None)
    status = getattr(response, "status_code", None) if response is not None else None
    reason = (str(e).strip().splitlines() or [""])[0]
    if status == 401:
        return UserError(f"{where}: the Hugging Face Hub refused the token (401 Unauthorized); log in again with "
                         "`hf auth login` or set HF_TOKEN to a valid token")
    if status == 403:
        return UserError(f"{where}: this token may not write to {repo!r} (403 Forbidden); push to a repository "
                         "of your own or of an organisation you may write to, with a write token")
    if status is None and _unreachable(e):
        return UserError(f"{where}: cannot reach the Hugging Face Hub ({type(e).__name__}: {reason}); check the "
                         "network connection and that HF_HUB_OFFLINE is not set, then push again")
    return UserError(f"{where} ({type(e).__name__}{f' {status}' if status else ''}: {reason})")


def _unreachable(e: Exception) -> bool:
    """A network failure (offline mode, refused, no route, timed out) in the HTTP client of any
    huggingface_hub version (requests, httpx)."""
    names = {c.__name__ for c in type(e).__mro__}
    return isinstance(e, (OSError, TimeoutError)) or bool(names & {"TransportError", "Timeout", "ConnectionError"})
