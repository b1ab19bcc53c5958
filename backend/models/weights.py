"""Find a model's weight file: an explicit path, the local model folders, then Hugging Face.

Offline (``SOFTMAP_OFFLINE=1``) only local folders are searched. When nothing is found the error
says which file to download, from where, and into which folder.
"""

from __future__ import annotations

from pathlib import Path

from backend.errors import WeightsNotFoundError
from backend.models.meta import ModelMeta
from backend.settings import Settings, get_settings


def search_dirs(settings: Settings) -> list[Path]:
    """Folders searched for weight files, in order: ``models_dir`` then ``assets/models``.

    Models whose weights ship with SoftMap (``softmap-default``) are found in ``assets/models``
    with no models folder and no network.
    """
    return [settings.models_dir, settings.assets_dir / "models"]


def local_candidates(meta: ModelMeta, settings: Settings) -> list[Path]:
    """Every local path where one of ``meta.weight_files`` may live, in search order.

    The user's ``models_dir`` wins over the bundled assets; within a folder the preferred file
    name wins, and ``<dir>/<model id>/<file>`` is accepted as well as ``<dir>/<file>``.
    """
    return [
        path
        for folder in search_dirs(settings)
        for name in meta.weight_files
        for path in (folder / name, folder / meta.id / name)
    ]


def _hf_repo(meta: ModelMeta, settings: Settings) -> str | None:
    # SOFTMAP_HF_REPO points the SoftCon entries at a mirror; other repos are taken as given.
    default = Settings.model_fields["hf_repo"].default
    if meta.hf_repo is not None and meta.hf_repo == default:
        return settings.hf_repo
    return meta.hf_repo


def _hf_errors() -> tuple[type[BaseException], ...]:
    # Exception classes moved between huggingface_hub releases, and network failures surface as
    # the HTTP client's own errors; collect whatever this version defines.
    from huggingface_hub import errors

    names = (
        "HfHubHTTPError",
        "EntryNotFoundError",
        "LocalEntryNotFoundError",
        "OfflineModeIsEnabled",
        "HFValidationError",
        "HTTPError",
    )
    found = [getattr(errors, name, None) for name in names]
    return (*(e for e in found if isinstance(e, type) and issubclass(e, BaseException)), OSError)


def download_weights(meta: ModelMeta, settings: Settings) -> tuple[Path | None, str]:
    """Try to fetch one of ``meta.weight_files`` from Hugging Face into ``models_dir``.

    Returns:
        ``(path, "")`` on success, else ``(None, reason)`` with a few words on why it failed.
    """
    repo = _hf_repo(meta, settings)
    if settings.offline:
        return None, "offline mode is on (SOFTMAP_OFFLINE)"
    if repo is None:
        return None, "the model has no Hugging Face repository"
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        return None, "huggingface_hub is not installed (pip install 'softmap[online]')"

    errors = _hf_errors()
    reasons: list[str] = []
    for name in meta.weight_files:
        try:
            local = hf_hub_download(repo, name, local_dir=settings.models_dir)
        except errors as err:
            reasons.append(f"{name}: {type(err).__name__}: {' '.join(str(err).split())[:160]}")
            continue
        return Path(str(local)), ""
    return None, "; ".join(reasons)


def resolve_weights(
    meta: ModelMeta, checkpoint: Path | None = None, settings: Settings | None = None
) -> Path | None:
    """The weight file for ``meta``.

    Args:
        meta: The model entry.
        checkpoint: An explicit file; it must exist and is used as is.
        settings: Defaults to :func:`backend.settings.get_settings`.

    Returns:
        The file to load, or None when the model needs no weights (a seeded random test model)
        and no ``checkpoint`` was given.

    Raises:
        WeightsNotFoundError: if ``checkpoint`` does not exist, or no file was found locally and
            Hugging Face was off or failed; the message names the file and where to put it.
    """
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(
                f"Checkpoint {path.resolve()} does not exist or is not a file "
                f"({meta.id} accepts {' or '.join(meta.weight_files) or 'any SoftCon file'})."
            )
        return path
    if meta.random_init_seed is not None:
        return None
    settings = settings or get_settings()
    for candidate in local_candidates(meta, settings):
        if candidate.is_file():
            return candidate
    if not meta.weight_files:
        raise WeightsNotFoundError(
            f"{meta.id} lists no weight files; pass --checkpoint PATH to load one."
        )

    name = meta.weight_files[0]
    if meta.hf_repo is None:
        # Weights that ship with SoftMap (assets/models/) are never downloaded: say how to restore.
        bundled = settings.assets_dir / "models" / name
        raise WeightsNotFoundError(
            f"{meta.id} needs {name}, which ships with SoftMap in {bundled} but is missing there. "
            "Restore it (git checkout assets/models), rebuild it (scripts/train_default_model.sh "
            f"for softmap-default), or put it in {settings.models_dir.expanduser().resolve()}/."
        )
    downloaded, reason = download_weights(meta, settings)
    if downloaded is not None:
        return downloaded
    others = meta.weight_files[1:]
    folder = settings.models_dir.expanduser().resolve()
    where = f"https://huggingface.co/{meta.hf_repo}" if meta.hf_repo else "the model's source"
    message = (
        f"{meta.id} needs {name}. Download it from {where} and put it in {folder}/ "
        "(or pass --checkpoint PATH)."
    )
    if others:
        message += f" {' or '.join(others)} is accepted too."
    message += f" Hugging Face download skipped or failed: {reason}."
    raise WeightsNotFoundError(message)


def find_local_weights(meta: ModelMeta, settings: Settings | None = None) -> Path | None:
    """The first local weight file for ``meta`` (never the network), or None if there is none."""
    settings = settings or get_settings()
    return next((p for p in local_candidates(meta, settings) if p.is_file()), None)
