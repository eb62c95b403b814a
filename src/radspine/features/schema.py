"""The feature table's schema: key columns, feature prefixes, column selection and table I/O.

This module is the one owner of the ``features.parquet`` format: every stage that writes or reads a
feature table (extract-features, tune, predict, report, analysis) goes through it.

Columns: the key columns :data:`KEY_COLUMNS`, then feature columns whose prefix says where they come from
(:data:`FEATURE_PREFIXES`): ``rad_`` radiomics, ``mor_`` morphometry (mm, mm²), ``cnn_`` CNN embeddings,
``ctx_`` neighbour/side context, ``geo_`` point geometry, ``has_`` presence flags. Point columns
(``pt_x/pt_y/pt_z``) and the CV fold (``cv_fold``) are bookkeeping, never model inputs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from radspine.errors import DatasetError

KEY_COLUMNS: tuple[str, ...] = ("study_id", "condition", "level", "side", "group", "row_id")
FEATURE_PREFIXES: tuple[str, ...] = ("rad_", "mor_", "cnn_", "ctx_", "geo_", "has_")
# Columns that every ablation keeps: they carry the level's context, not one image source.
SHARED_PREFIXES: tuple[str, ...] = ("ctx_", "geo_", "has_")
FOLD_COLUMN = "cv_fold"


def feature_columns(table: pd.DataFrame, prefixes: tuple[str, ...] = FEATURE_PREFIXES) -> list[str]:
    """Numeric model-input columns with one of ``prefixes``, in table order."""
    return [c for c in table.columns if c.startswith(prefixes) and pd.api.types.is_numeric_dtype(table[c])]


_CNN_DERIVED = re.compile(r"(^|_)cnn_\d+$")


def is_cnn_column(name: str) -> bool:
    """A column carrying CNN evidence: ``cnn_*``, its context copies (``ctx_prev_cnn_0`` ...) and ``has_cnn``.
    A grader "without the CNN" must drop all of them, not only the ``cnn_`` prefix."""
    return name == "has_cnn" or bool(_CNN_DERIVED.search(name))


def check_table(table: pd.DataFrame, source: str = "features table") -> pd.DataFrame:
    """Validate key columns and the presence of features; returns the table with ``study_id`` as int.

    Raises:
        DatasetError: a key column is missing, there is no feature column, or (study_id, condition,
            level) repeats.
    """
    missing = [c for c in KEY_COLUMNS if c not in table.columns]
    if missing:
        raise DatasetError(f"{source}: missing columns {missing}")
    if not feature_columns(table):
        raise DatasetError(f"{source}: no feature columns (prefixes {list(FEATURE_PREFIXES)})")
    dup = table.duplicated(["study_id", "condition", "level"])
    if dup.any():
        r = table.loc[dup].iloc[0]
        raise DatasetError(f"{source}: duplicate row study {r['study_id']} {r['condition']} {r['level']}")
    table = table.copy()
    table["study_id"] = table["study_id"].astype(int)
    return table.reset_index(drop=True)


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Validate and write a feature table atomically (parquet)."""
    from radspine.fsutil import write_parquet_atomic

    path = Path(path)
    write_parquet_atomic(check_table(table, str(path)), path)
    return path


def read_table(path: str | Path) -> pd.DataFrame:
    """Read and validate a ``features.parquet``; raises DatasetError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: not found (run `radspine extract-features` first)")
    try:
        table = pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several unrelated types for corrupt files
        raise DatasetError(f"{path}: cannot read parquet: {str(err).splitlines()[0]}") from None
    return check_table(table, str(path))
