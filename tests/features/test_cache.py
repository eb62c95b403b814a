"""The per-study cache's row writer: the same frame back as pandas' own Parquet path gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from radspine.features.cache import _write_rows


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({f"rad_{i}": rng.normal(size=25) for i in range(40)})
    df.loc[3, "rad_7"] = np.nan
    df.insert(0, "row_id", pd.array([f"1_c_l{i}" for i in range(25)], dtype="str"))
    df.insert(1, "study_id", np.arange(25, dtype=np.int64))
    df["has_point"] = rng.random(25) > 0.5
    df["flag"] = pd.array(["", None] + ["x"] * 23, dtype="str")
    return df


def test_rows_read_back_as_pandas_writes_them(tmp_path: Path) -> None:
    df = _frame()
    _write_rows(df, tmp_path / "fast.parquet")
    df.to_parquet(tmp_path / "pandas.parquet", index=False)
    fast, ref = pd.read_parquet(tmp_path / "fast.parquet"), pd.read_parquet(tmp_path / "pandas.parquet")
    pd.testing.assert_frame_equal(fast, ref)
    assert list(fast.columns) == list(df.columns) and np.isnan(fast.loc[3, "rad_7"])
    assert pd.isna(fast.loc[1, "flag"]) and fast.loc[2, "flag"] == "x"
    # Written by the block path (pandas' own writer adds its metadata to the schema).
    assert b"pandas" not in (pq.read_schema(tmp_path / "fast.parquet").metadata or {})
    assert b"pandas" in pq.read_schema(tmp_path / "pandas.parquet").metadata


def test_other_dtypes_take_pandas_path(tmp_path: Path) -> None:
    df = _frame().assign(side=pd.Categorical(["left"] * 25), note=pd.array(["a", None] * 12 + ["b"], dtype="string"))
    _write_rows(df, tmp_path / "other.parquet")
    df.to_parquet(tmp_path / "pandas.parquet", index=False)
    back = pd.read_parquet(tmp_path / "other.parquet")
    assert isinstance(back["side"].dtype, pd.CategoricalDtype) and back["note"].dtype == pd.StringDtype()
    pd.testing.assert_frame_equal(back, pd.read_parquet(tmp_path / "pandas.parquet"))
