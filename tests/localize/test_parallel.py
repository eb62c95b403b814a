"""localize_dataset over processes gives the same points as serially; already-read volumes are used as given."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from radspine.localize import localize_dataset


def test_process_workers_match_serial(loc_model: Path, loc_root: Path, tmp_path: Path):
    serial = localize_dataset(loc_root, loc_model, tmp_path / "s.csv", split="test")
    par = localize_dataset(loc_root, loc_model, tmp_path / "p.csv", split="test", workers=2)
    pd.testing.assert_frame_equal(serial, par)
    assert (tmp_path / "s.csv").read_bytes() == (tmp_path / "p.csv").read_bytes()


def test_given_volumes_are_not_read_again(loc_model: Path, loc_root: Path, tmp_path: Path, monkeypatch):
    from dataclasses import replace

    from radspine.io.dataset import Dataset
    from radspine.io.volumes import load_study_volumes
    from radspine.localize import infer

    ds = Dataset.open(loc_root)
    vols = {s.study_id: load_study_volumes(s) for s in ds.studies("test")}
    first = ds.studies("test")[0].study_id
    vols[first] = replace(vols[first], sag_t2=None, sag_t1=None)  # visibly different from a fresh read

    def no_read(study):
        raise AssertionError("study read again")

    monkeypatch.setattr(infer, "load_study_volumes", no_read)
    df = localize_dataset(loc_root, loc_model, tmp_path / "v.csv", split="test", volumes=vols)
    assert df[df.study_id == first].flag.str.startswith("not localised").all()
    assert (df[df.study_id != first].series_id >= 0).all()
