"""The CNN stage of ``extract-features``: ``cnn_*`` columns for every row of a feature table.

Training split: each family's network is fitted out of fold on the SAME study folds that ``tune`` uses
(column ``cv_fold``, from :func:`radspine.folds.study_folds`), so no grader validation fold holds CNN
features from a network that saw its labels; an all-data network is saved for test rows. A family without
labelled patches (or with fewer than 2 grades) is skipped with a logged reason: its rows get NaN ``cnn_*``
and ``has_cnn = 0``, and the skip is recorded in ``embedders/embedders.json`` so the test split does the same.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from radspine.errors import RadspineError
from radspine.features.cache import load_cached_patches
from radspine.features.config import CNN_FAMILIES, FeaturesConfig
from radspine.features.study import StudyFeatures
from radspine.fsutil import write_json_atomic

log = logging.getLogger(__name__)

MANIFEST = "embedders.json"


def read_manifest(embedders_dir: Path) -> dict:
    """``{"trained": [...], "skipped": {family: reason}}`` of an embedders folder.

    Raises:
        RadspineError: the folder has neither a manifest nor any embedder (train split not extracted).
    """
    embedders_dir = Path(embedders_dir)
    m = embedders_dir / MANIFEST
    if m.is_file():
        try:
            return json.loads(m.read_text())
        except json.JSONDecodeError as err:
            raise RadspineError(f"{m}: corrupt JSON ({err})") from None
    # Folders written before the manifest existed: every family with an embedder.json was trained.
    trained = [f for f in CNN_FAMILIES if (embedders_dir / f / "embedder.json").is_file()]
    if not trained:
        raise RadspineError(
            f"no trained CNN embedders in {embedders_dir}: extract the train split first or pass --embedders"
        )
    return {"trained": trained, "skipped": {f: "no embedder" for f in CNN_FAMILIES if f not in trained}}


def _family_patches(results: dict[int, StudyFeatures], cache_dir: Path, fam: str) -> tuple[np.ndarray | None, list[str]]:
    xs, ids = [], []
    for sid, sf in results.items():
        arr = load_cached_patches(cache_dir, sid, fam)
        if arr is not None:
            xs.append(arr)
            ids.extend(sf.patch_row_ids[fam])
    if not xs:
        return None, []
    return np.concatenate(xs), ids


def add_cnn_columns(
    base: pd.DataFrame,
    results: dict[int, StudyFeatures],
    cache_dir: Path,
    cfg: FeaturesConfig,
    split: str,
    grades: dict[str, float] | None,
    out: Path,
    embedders_dir: Path,
) -> tuple[pd.DataFrame, dict]:
    """Add ``cnn_*`` and ``has_cnn`` columns; return the table and ``{"trained", "skipped", "weights"}``
    (``weights``: per family, the initial weights of its network, name + sha256, for the features meta).

    ``grades`` maps row_id → grade (train split); ``base`` must carry ``cv_fold`` on the train split.
    """
    from radspine.features.cnn_models import PREFIX_CACHE
    from radspine.features.embeddings import embedding_columns, load_embedder, oof_embeddings

    frames = []
    trained: list[str] = []
    skipped: dict[str, str] = {}
    weights: dict[str, dict] = {}  # family -> initial weights of its network (name, path, sha256): features meta
    manifest = read_manifest(embedders_dir) if split != "train" else None
    has_patch = dict(zip(base["row_id"], base.get("has_cnn_patch", pd.Series(1.0, index=base.index)), strict=True))
    fold_of = dict(zip(base["row_id"], base["cv_fold"], strict=True)) if "cv_fold" in base else {}
    for fam in CNN_FAMILIES:
        # One family at a time, read back from the cache: all studies' patches of every family at once
        # would dominate peak memory on a large dataset.
        x, ids = _family_patches(results, cache_dir, fam)
        if x is None:
            skipped[fam] = "no patches"
            continue
        ok = np.array([has_patch.get(r, 1.0) == 1.0 for r in ids])
        if split == "train":
            y = np.array([(grades or {}).get(r, np.nan) for r in ids], dtype=np.float64)
            y[~ok] = np.nan  # a zero patch (no image at the point) teaches nothing
            present = np.unique(y[~np.isnan(y)])
            if present.size < 2:
                skipped[fam] = f"{int((~np.isnan(y)).sum())} labelled patches with {present.size} grade(s); need 2 grades"
                log.warning("CNN %s skipped: %s (NaN cnn_* columns, has_cnn=0)", fam, skipped[fam])
                continue
            groups = np.array([int(r.split("_", 1)[0]) for r in ids])
            folds = np.array([fold_of[r] for r in ids]) if fold_of else None
            ecfg = cfg.embeddings.for_patch(getattr(cfg.patches, CNN_FAMILIES[fam]).size_mm)
            emb, full = oof_embeddings(x, y, groups, ecfg, n_folds=cfg.cnn_folds, seed=cfg.seed, folds=folds)
            full.save(out / "embedders" / fam)
            weights[fam] = full.weights_
        else:
            if fam not in manifest.get("trained", []):
                skipped[fam] = manifest.get("skipped", {}).get(fam, "not trained")
                continue
            loaded = load_embedder(embedders_dir / fam, device=cfg.embeddings.device)
            weights[fam] = loaded.weights_
            emb = loaded.transform(x)
        PREFIX_CACHE.clear()  # the family's frozen-prefix activations are not needed any more
        emb = emb.astype(np.float32)
        emb[~ok] = np.nan  # no patch at this point: no CNN evidence, not the embedding of a blank
        trained.append(fam)
        frames.append(pd.DataFrame(emb, columns=embedding_columns(emb.shape[1])).assign(row_id=ids, has_cnn=ok.astype(float)))
    if split == "train":
        (out / "embedders").mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "embedders" / MANIFEST, {"trained": trained, "skipped": skipped})
    info = {"trained": trained, "skipped": skipped, "weights": weights}
    if not frames:
        return base.assign(has_cnn=0.0), info
    cnn = pd.concat(frames, ignore_index=True)
    merged = base.merge(cnn, on="row_id", how="left")
    merged["has_cnn"] = merged["has_cnn"].fillna(0.0)
    return merged, info
