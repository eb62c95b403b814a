"""The points CSV: one owner for the format that ``localize`` writes and ``extract-features``/``predict`` read.

Two files: ``points.csv`` in the exact ``train_label_coordinates.csv`` schema (:data:`SCHEMA_COLUMNS`,
localised rows only, so a person can correct it in a viewer and give it back with ``--points``) and the
``<stem>_detail.csv`` sidecar with all 25 rows per study, world coordinates (mm, LPS), a ``flag`` saying why a
point is missing or doubtful, and (when the localizer knows it) a ``confidence`` in [0, 1].
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from radspine.errors import RadspineError

log = logging.getLogger(__name__)

SCHEMA_COLUMNS: tuple[str, ...] = ("study_id", "series_id", "instance_number", "condition", "level", "x", "y")
DETAIL_COLUMNS: tuple[str, ...] = (*SCHEMA_COLUMNS, "world_x", "world_y", "world_z", "flag")


def detail_path(out_csv: Path | str) -> Path:
    """Sidecar of a points CSV holding every row with world_x/y/z and flag: ``<stem>_detail.csv``."""
    out_csv = Path(out_csv)
    return out_csv.with_name(out_csv.stem + "_detail.csv")


def write_points(points: pd.DataFrame, out_csv: Path | str) -> tuple[Path, Path]:
    """Write ``out_csv`` in the exact train_label_coordinates.csv schema and its ``_detail.csv`` sidecar.

    The schema file holds only localised rows (a row without a series cannot be expressed in that
    schema); the sidecar keeps all 25 rows per study with world coordinates and flags. Both atomic.
    """
    from radspine.fsutil import write_csv_atomic

    ok = (points["series_id"] >= 0) & np.isfinite(points["x"]) & np.isfinite(points["y"])
    if (~ok).any():
        log.warning("%d unlocalised point(s) left out of %s (see %s)", int((~ok).sum()), out_csv, detail_path(out_csv))
    write_csv_atomic(points, detail_path(out_csv))
    write_csv_atomic(points.loc[ok, list(SCHEMA_COLUMNS)], Path(out_csv))
    return Path(out_csv), detail_path(out_csv)


def read_points(path: Path | str) -> pd.DataFrame:
    """Read a points CSV or its ``_detail.csv`` as written (ids int, flag str; condition/level as written)."""
    df = pd.read_csv(path, dtype={"study_id": "int64", "series_id": "int64", "instance_number": "int64"},
                     keep_default_na=True)  # fmt: skip
    if "flag" in df:
        df["flag"] = df["flag"].fillna("").astype(str)
    return df


def read_points_csv(path: Path | str) -> pd.DataFrame:
    """Read a points CSV for grading: validated like train_label_coordinates.csv, condition/level as keys.

    Raises:
        RadspineError: the file is missing or breaks the schema (one line naming file, row and column).
    """
    from radspine.io.dataset import read_coordinates

    path = Path(path)
    if not path.is_file():
        raise RadspineError(f"points file not found: {path}")
    return read_coordinates(path)


def points_hash(pts: pd.DataFrame) -> str:
    """Content hash of a points table (order-independent within the schema columns)."""
    t = pts[list(SCHEMA_COLUMNS)].sort_values(list(SCHEMA_COLUMNS[:5]), kind="stable").reset_index(drop=True)
    h = pd.util.hash_pandas_object(t, index=False).to_numpy()
    return hashlib.sha256(h.tobytes()).hexdigest()[:12]


# Flag vocabulary (the localizer writes it, extract-features reads it). A flag is "; "-joined parts;
# a part that starts with one of these prefixes makes the point unusable for grading: it is kept in the
# points files for a person to check, but its row gets NaN image features and the grader/priors decide.
UNUSABLE_PREFIXES: tuple[str, ...] = ("not localised", "failed", "doubtful")


def is_unusable(flag: str | float | None) -> bool:
    """Whether a point's flag says it must not be graded from (missing, failed or doubtful)."""
    if not isinstance(flag, str) or not flag:
        return False
    return any(part.strip().startswith(UNUSABLE_PREFIXES) for part in flag.split(";"))


def attach_detail_flags(pts: pd.DataFrame, path: Path | str) -> pd.DataFrame:
    """Add the ``flag`` of the ``_detail.csv`` sidecar to schema rows that are unchanged from it.

    A person who corrected a point in a viewer changed its series/instance/x/y: the localizer's flag no
    longer applies to it and is dropped; untouched rows keep theirs (so a doubtful point stays doubtful).
    """
    side = detail_path(path)
    out = pts.copy()
    out["flag"] = ""
    if not side.is_file():
        return out
    from radspine.constants import CONDITION_KEYS, LEVEL_KEYS

    det = read_points(side)
    det = det.assign(condition=det["condition"].map(lambda c: CONDITION_KEYS.get(c, c)),
                     level=det["level"].map(lambda v: LEVEL_KEYS.get(v, v)))  # fmt: skip
    key = ["study_id", "series_id", "instance_number", "condition", "level", "_x", "_y"]
    for df in (out, det):
        df["_x"], df["_y"] = df["x"].round(3), df["y"].round(3)
    merged = out.drop(columns="flag").merge(det[[*key, "flag"]].drop_duplicates(key), on=key, how="left")
    merged["flag"] = merged["flag"].fillna("").astype(str)
    return merged.drop(columns=["_x", "_y"])
