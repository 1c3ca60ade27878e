"""What proxy corpora share: their marker file, their default home, and writing them safely.

A proxy corpus is a folder in the real corpus's layout plus a ``cellc-proxy.json`` marker
(written last, so a half-written folder is recognised and rebuilt). Proxies live in the
user's data directory (``$CELLC_DATA_DIR`` or ``~/.local/share/cellc``), never in the repo.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cellc.errors import DataError

MARKER = "cellc-proxy.json"
PROXY_LABEL = "proxy"


def proxy_dir(data_root: Path, task: str) -> Path:
    """``<data root>/<task>-proxy``: e.g. ``~/.local/share/cellc/timit-proxy``."""
    return data_root / f"{task}-proxy"


def read_marker(root: Path) -> dict[str, Any] | None:
    """The proxy marker of ``root``, or None for a real corpus."""
    path = root / MARKER
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable proxy marker ({err}); delete the folder to regenerate it") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: proxy marker must be a JSON object; delete the folder to regenerate it")
    return value


def is_complete_proxy(root: Path, config: BaseModel | None = None) -> bool:
    """True when ``root`` holds a finished proxy (made with ``config``, if one is given)."""
    marker = read_marker(root) if root.is_dir() else None
    if marker is None:
        return False
    return config is None or marker.get("config") == config.model_dump()


def prepare_target(root: Path) -> None:
    """Make ``root`` ready for a fresh proxy: refuse to touch a folder that is not ours."""
    if root.exists():
        if not root.is_dir():
            raise DataError(f"{root}: exists and is not a folder")
        ours = (root / MARKER).is_file() or (root / ".cellc-proxy-partial").is_file()
        if not ours and any(root.iterdir()):
            raise DataError(f"{root}: not empty and not a cellc proxy corpus; choose another --root")
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / ".cellc-proxy-partial").write_text("generation in progress or interrupted\n", encoding="utf-8")


def finish(root: Path, marker: dict[str, Any]) -> None:
    (root / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (root / ".cellc-proxy-partial").unlink(missing_ok=True)
