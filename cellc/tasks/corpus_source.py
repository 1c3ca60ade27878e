"""Where a licensed corpus comes from: the user's real copy, or a generated proxy.

Order: ``<data root>/<real_subdir>`` for the usual data roots (see
:func:`cellc.tasks.base.resolve_data_root`); then a finished proxy at
``<proxy home>/<task>-proxy``, where the proxy home is ``--data-dir`` / ``$CELLC_DATA_DIR``
when set, else the user data dir (never the repository); then, if allowed, a freshly
generated default-size proxy. Generation goes to a temporary sibling folder renamed into
place at the end, so parallel workers never see half a corpus.

A data root named explicitly (``--data-dir`` / ``$CELLC_DATA_DIR``) must exist: a mistyped
path is a DataError, never a fresh proxy in a new folder. An existing one without the real
corpus gets the proxy in ``<data root>/<task>-proxy``, as documented.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellc.data import proxy_corpus
from cellc.errors import DataError
from cellc.tasks.base import explicit_data_root, resolve_data_root, user_data_root


@dataclass(frozen=True)
class CorpusLocation:
    root: Path
    source: str  # "real" or "proxy"
    marker: dict[str, Any] | None = field(default=None)
    generated_now: bool = False


def proxy_home(data_dir: str | Path | None) -> Path:
    """The data root a proxy is written under: explicit setting, else the user data dir."""
    named = explicit_data_root(data_dir)
    return named[0] if named is not None else user_data_root()


def locate_corpus(
    task: str,
    data_dir: str | Path | None,
    real_subdir: str,
    generate: Callable[[Path], object],
    auto_generate: bool = True,
) -> CorpusLocation:
    named = explicit_data_root(data_dir)
    if named is not None and not named[0].is_dir():
        raise DataError(
            f"{task}: {named[1]} {named[0]}: folder not found. Check the path; to generate a proxy corpus "
            f"there run `mkdir -p {named[0]} && cellc data prepare --task {task} --proxy --data-dir {named[0]}`"
        )
    root, looked = resolve_data_root(data_dir, real_subdir)
    if root is not None:
        path = root / real_subdir
        marker = proxy_corpus.read_marker(path)
        return CorpusLocation(path, proxy_corpus.PROXY_LABEL if marker else "real", marker)
    target = proxy_corpus.proxy_dir(proxy_home(data_dir), task)
    if proxy_corpus.is_complete_proxy(target):
        return CorpusLocation(target, proxy_corpus.PROXY_LABEL, proxy_corpus.read_marker(target))
    if not auto_generate:
        raise DataError(
            f"{task}: no corpus found; looked in: {'; '.join(looked)}; {target} (proxy). "
            f"Point --data-dir at a folder holding {real_subdir}/, or run `cellc data prepare --task {task} --proxy`"
        )
    generate_atomically(target, generate)
    return CorpusLocation(target, proxy_corpus.PROXY_LABEL, proxy_corpus.read_marker(target), generated_now=True)


def generate_atomically(target: Path, generate: Callable[[Path], object]) -> None:
    """Run ``generate`` into a temporary sibling and rename it to ``target``; a concurrent
    winner's corpus is kept (same config and seed give the same files)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f".{target.name}.tmp{os.getpid()}"
    if temporary.exists():
        shutil.rmtree(temporary)
    try:
        generate(temporary)
        if target.exists() and not proxy_corpus.is_complete_proxy(target):
            proxy_corpus.prepare_target(target)  # refuses a folder that is not ours; empties ours
            shutil.rmtree(target)
        try:
            os.rename(temporary, target)
        except OSError:
            if not proxy_corpus.is_complete_proxy(target):
                raise
    except OSError as err:
        raise DataError(f"{target}: cannot write the proxy corpus ({err})") from None
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
