"""DICOM series folder → :class:`radspine.types.Volume` stacks with true world geometry.

pydicom (with the pylibjpeg / gdcm plugins) parses and decodes every transfer syntax; this module only
turns slices into consistent stacks. Slices are grouped by orientation, image size and in-plane grid,
sorted by position along the slice normal (never by InstanceNumber), and split at gaps; slice spacing
is measured from ImagePositionPatient because many real files lack SpacingBetweenSlices.

Real series are partial: a corrupt, truncated or geometry-less slice is dropped (a warning naming the
file and why, and ``Volume.meta["dropped_files"]``) instead of losing the whole series; only a series
with no readable slice is a :class:`DicomError`. A slice without PixelSpacing takes ImagerPixelSpacing,
else the PixelSpacing of the series' slices on the same grid (``Volume.meta["pixel_spacing_fallback"]``).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radspine.errors import DicomError
from radspine.types import Volume

log = logging.getLogger(__name__)

# Direction cosines written as decimal strings carry ~1e-6 noise; 1e-3 (≈0.06°) still separates
# the tilted stacks of a real multi-stack axial series, which differ by degrees.
ORIENTATION_TOL = 1e-3
# Slice origins of one stack may differ in-plane by this fraction of a pixel (string rounding,
# cosine noise times the distance along the normal); more means a different in-plane grid.
INPLANE_TOL_PX = 0.3
# Two slices closer than this along the normal occupy the same plane (a repeat, not a neighbour).
SAME_PLANE_MM = 0.01
# A step larger than this multiple of the stack's median step is a gap that starts a new stack.
GAP_FACTOR = 1.5
# A gap within this fraction of a whole number of steps is "planes missing", not a new stack.
GAP_WHOLE_STEPS_TOL = 0.1

_META_TAGS = (
    "Manufacturer",
    "ManufacturerModelName",
    "MagneticFieldStrength",
    "RepetitionTime",
    "EchoTime",
    "SpacingBetweenSlices",
    "SeriesInstanceUID",
    "SeriesDescription",
)
_NUMERIC_META = {"MagneticFieldStrength", "RepetitionTime", "EchoTime", "SpacingBetweenSlices"}


@dataclass
class _Slice:
    path: Path
    position: np.ndarray  # (3,)
    row_cosine: np.ndarray  # (3,)
    col_cosine: np.ndarray  # (3,)
    spacing: tuple[float, float] | None  # None until a fallback fills it (see _fill_spacing)
    spacing_source: str  # "PixelSpacing" | "ImagerPixelSpacing" | "series" (same-grid slices)
    instance: int | None
    pixels: np.ndarray  # (R, C) float32
    thickness: float | None
    meta: dict


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:200] if text else type(err).__name__


def _candidate_files(folder: Path) -> list[Path]:
    entries = [Path(e.path) for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")]
    dcm = [p for p in entries if p.suffix.lower() == ".dcm"]
    return sorted(dcm or entries, key=lambda p: (len(p.name), p.name))


def list_dicom_files(folder: str | Path) -> list[Path]:
    """Files of a series folder: the ``*.dcm`` files if any, else every non-hidden regular file.

    Raises DicomError if the folder is missing or holds no files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomError(f"{folder}: series folder does not exist")
    files = _candidate_files(folder)
    if not files:
        raise DicomError(f"{folder}: empty series folder (no DICOM files)")
    return files


def looks_like_dicom(path: str | Path) -> bool:
    """Whether a file starts like a DICOM Part 10 file (the ``DICM`` magic after the 128-byte preamble).

    pydicom refuses files without it unless forced, so this is the same test :func:`read_series` applies,
    at the cost of reading 132 bytes.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def probe_series_folder(folder: str | Path) -> tuple[int, bool]:
    """(number of candidate files, whether one of them is a DICOM file) without decoding anything.

    Cheap enough for a dataset scan: it stops at the first DICOM file. A missing folder gives (0, False).
    """
    folder = Path(folder)
    try:
        files = _candidate_files(folder)
    except OSError:
        return 0, False
    return len(files), any(looks_like_dicom(p) for p in files)


def _float_list(ds, keyword: str, n: int, path: Path) -> np.ndarray | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DicomError(f"{path}: malformed {keyword} {value!r}") from err
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise DicomError(f"{path}: malformed {keyword} {list(value)!r} (expected {n} numbers)")
    return arr


def _optional_float(ds, keyword: str) -> float | None:
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def _instance_number(ds, path: Path) -> int | None:
    value = ds.get("InstanceNumber")
    if value not in (None, ""):
        try:
            return int(value)
        except (TypeError, ValueError):
            pass
    # The competition names files <InstanceNumber>.dcm, so the stem is a faithful fallback.
    return int(path.stem) if path.stem.isdigit() else None


def _read_slice(path: Path) -> _Slice:
    """Parse and decode one single-frame greyscale slice; DicomError naming the file otherwise."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as err:
        raise DicomError(f"{path}: not a DICOM file ({_one_line(err)})") from None
    except OSError as err:
        raise DicomError(f"{path}: cannot read file ({err.strerror or _one_line(err)})") from None
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for truncated/corrupt files
        raise DicomError(f"{path}: corrupt or truncated DICOM file ({_one_line(err)})") from None

    if "PixelData" not in ds:
        raise DicomError(f"{path}: no pixel data (truncated or not an image)")
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise DicomError(f"{path}: multi-frame DICOM is not supported (NumberOfFrames={ds.NumberOfFrames})")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomError(f"{path}: colour DICOM is not supported (SamplesPerPixel={ds.SamplesPerPixel})")

    iop = _float_list(ds, "ImageOrientationPatient", 6, path)
    ipp = _float_list(ds, "ImagePositionPatient", 3, path)
    source = "PixelSpacing"
    spacing = _float_list(ds, "PixelSpacing", 2, path)
    if spacing is None:
        source = "ImagerPixelSpacing"
        spacing = _float_list(ds, "ImagerPixelSpacing", 2, path)
    missing = [n for n, v in (("ImageOrientationPatient", iop), ("ImagePositionPatient", ipp)) if v is None]
    if missing:
        raise DicomError(f"{path}: missing geometry tag(s) {', '.join(missing)}")
    assert iop is not None and ipp is not None
    if spacing is not None and np.any(spacing <= 0):
        raise DicomError(f"{path}: non-positive {source} {spacing.tolist()}")
    row_cos, col_cos = iop[:3], iop[3:]
    nr, nc = np.linalg.norm(row_cos), np.linalg.norm(col_cos)
    if nr < 0.5 or nc < 0.5 or abs(float(row_cos @ col_cos)) / (nr * nc) > 0.01:
        raise DicomError(f"{path}: ImageOrientationPatient {iop.tolist()} is not two orthogonal unit vectors")

    try:
        raw = ds.pixel_array
    except Exception as err:  # noqa: BLE001 - decoder plugins raise assorted errors
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(ts, "name", str(ts))
        raise DicomError(f"{path}: cannot decode pixel data ({name}): {_one_line(err)}") from None
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if raw.ndim != 2 or raw.shape != (rows, cols):
        raise DicomError(f"{path}: decoded pixels {raw.shape} do not match Rows×Columns ({rows}, {cols})")
    # apply_modality_lut applies RescaleSlope/Intercept (or a Modality LUT) only when present.
    pixels = np.asarray(apply_modality_lut(raw, ds), dtype=np.float32)

    meta: dict = {}
    for tag in _META_TAGS:
        value = ds.get(tag)
        if value in (None, ""):
            continue
        number = _optional_float(ds, tag) if tag in _NUMERIC_META else None
        meta[tag] = number if number is not None else str(value)
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None:
        meta["TransferSyntaxUID"] = str(ts)
    return _Slice(
        path=path,
        position=ipp,
        row_cosine=row_cos / nr,
        col_cosine=col_cos / nc,
        spacing=None if spacing is None else (float(spacing[0]), float(spacing[1])),
        spacing_source=source if spacing is not None else "series",
        instance=_instance_number(ds, path),
        pixels=pixels,
        thickness=_optional_float(ds, "SliceThickness"),
        meta=meta,
    )


def _same_orientation(a: _Slice, b: _Slice) -> bool:
    return (
        np.max(np.abs(a.row_cosine - b.row_cosine)) < ORIENTATION_TOL
        and np.max(np.abs(a.col_cosine - b.col_cosine)) < ORIENTATION_TOL
    )


def _names(paths: list[Path], n: int = 3) -> str:
    shown = ", ".join(p.name for p in paths[:n])
    return shown + (f", ... ({len(paths)} in all)" if len(paths) > n else "")


def _fill_spacing(folder: Path, slices: list[_Slice]) -> tuple[list[_Slice], list[tuple[Path, DicomError]]]:
    """Give slices without (Imager)PixelSpacing the PixelSpacing of same-size, same-orientation slices.

    Returns (usable slices, errors for slices no donor fits). Logs which fallback each slice used.
    """
    imager = [s.path for s in slices if s.spacing_source == "ImagerPixelSpacing"]
    if imager:
        log.warning("%s: %d slice(s) without PixelSpacing use ImagerPixelSpacing (%s)", folder, len(imager),
                    _names(imager))
    donors = [s for s in slices if s.spacing is not None]
    kept: list[_Slice] = []
    errors: list[tuple[Path, DicomError]] = []
    borrowed: dict[tuple[float, float], list[Path]] = {}
    for s in slices:
        if s.spacing is not None:
            kept.append(s)
            continue
        values: list[tuple[float, float]] = []
        for d in donors:
            if d.pixels.shape == s.pixels.shape and _same_orientation(d, s) and not any(
                    np.allclose(d.spacing, v, rtol=1e-4, atol=1e-6) for v in values):
                values.append(d.spacing)  # type: ignore[arg-type]
        if len(values) == 1:
            s.spacing = values[0]
            borrowed.setdefault(values[0], []).append(s.path)
            kept.append(s)
        elif not values:
            errors.append((s.path, DicomError(
                f"{s.path}: missing PixelSpacing (no ImagerPixelSpacing, and no slice of the series with the "
                f"same image size {s.pixels.shape[1]}x{s.pixels.shape[0]} and orientation has one)")))
        else:
            errors.append((s.path, DicomError(
                f"{s.path}: missing PixelSpacing, and the series' slices with the same image size and "
                f"orientation disagree ({', '.join(str(list(v)) for v in values)})")))
    for value, paths in borrowed.items():
        log.warning("%s: %d slice(s) without PixelSpacing or ImagerPixelSpacing use PixelSpacing %s of the "
                    "series' slices on the same grid (%s)", folder, len(paths), list(value), _names(paths))
    return kept, errors


def _same_grid(a: _Slice, b: _Slice) -> bool:
    return (
        a.pixels.shape == b.pixels.shape
        and np.allclose(a.spacing, b.spacing, rtol=1e-4, atol=1e-6)
        and np.max(np.abs(a.row_cosine - b.row_cosine)) < ORIENTATION_TOL
        and np.max(np.abs(a.col_cosine - b.col_cosine)) < ORIENTATION_TOL
    )


def _group(slices: list[_Slice], missing: int = 0) -> list[list[_Slice]]:
    """Partition slices into parallel stacks that share one in-plane grid, without gaps.

    ``missing``: slices of the series that were dropped; gaps they can explain do not split a stack.
    """
    groups: list[list[_Slice]] = []
    for s in slices:  # orientation + size + spacing
        for g in groups:
            if _same_grid(g[0], s):
                g.append(s)
                break
        else:
            groups.append([s])

    stacks: list[list[_Slice]] = []
    for g in groups:
        ref = g[0]
        normal = np.cross(ref.row_cosine, ref.col_cosine)
        normal /= np.linalg.norm(normal)
        tol = INPLANE_TOL_PX * min(ref.spacing)
        # Same in-plane grid: slice origins differ only along the normal.
        grids: list[tuple[np.ndarray, list[_Slice]]] = []
        for s in g:
            rel = s.position - ref.position
            inplane = np.array([rel @ ref.row_cosine, rel @ ref.col_cosine])
            for origin, members in grids:
                if np.max(np.abs(inplane - origin)) <= tol:
                    members.append(s)
                    break
            else:
                grids.append((inplane, [s]))
        for _, members in grids:
            stacks.extend(_split_along_normal(members, normal, missing))
    return stacks


def _split_along_normal(members: list[_Slice], normal: np.ndarray, missing: int = 0) -> list[list[_Slice]]:
    """Sort by position along the normal; repeated planes go to separate layers; split layers at gaps.

    A gap of a whole number k of steps is kept inside the stack while ``missing`` (dropped slices)
    can account for its k - 1 absent planes: one corrupt slice must not cut a stack in two.
    """
    inst = [s.instance if s.instance is not None else 0 for s in members]
    offsets = np.array([s.position @ normal for s in members])
    order = sorted(range(len(members)), key=lambda i: (offsets[i], inst[i]))
    layers: list[list[int]] = []
    for i in order:
        for layer in layers:
            if abs(offsets[layer[-1]] - offsets[i]) > SAME_PLANE_MM:
                layer.append(i)
                break
        else:
            layers.append([i])
    out: list[list[_Slice]] = []
    for layer in layers:
        d = np.diff(offsets[layer])
        if d.size >= 2:
            step = float(np.median(d))
            cuts = []
            budget = missing
            for j, v in enumerate(d):
                if v <= GAP_FACTOR * step:
                    continue
                k = round(v / step)
                if 1 <= k - 1 <= budget and abs(v / step - k) < GAP_WHOLE_STEPS_TOL:
                    budget -= k - 1
                    continue
                cuts.append(j + 1)
        else:
            cuts = []
        for part in np.split(np.array(layer), cuts):
            out.append([members[i] for i in part])
    return out


def _to_volume(stack: list[_Slice], *, study_id: int, series_id: int, description: str,
               stack_index: int, dropped: list[dict[str, str]]) -> Volume:
    ref = stack[0]
    meta = dict(ref.meta)
    meta["files"] = [s.path.name for s in stack]
    fallback = {s.path.name: s.spacing_source for s in stack if s.spacing_source != "PixelSpacing"}
    if fallback:
        meta["pixel_spacing_fallback"] = fallback
    if dropped:
        meta["dropped_files"] = [dict(d) for d in dropped]
    assert ref.spacing is not None
    return Volume(
        pixels=np.stack([s.pixels for s in stack]).astype(np.float32, copy=False),
        positions=np.stack([s.position for s in stack]),
        row_cosine=ref.row_cosine.copy(),
        col_cosine=ref.col_cosine.copy(),
        pixel_spacing=ref.spacing,
        instance_numbers=np.array([s.instance for s in stack], dtype=np.int64),
        study_id=int(study_id),
        series_id=int(series_id),
        description=description,
        stack_index=stack_index,
        slice_thickness=ref.thickness,
        meta=meta,
    )


def read_series(
    folder: str | Path, *, study_id: int = 0, series_id: int | None = None, description: str = ""
) -> list[Volume]:
    """Every geometrically consistent stack of a series folder, slices sorted along the normal.

    Stacks are split by orientation, image size / pixel spacing, in-plane grid and gaps along the
    normal; they are returned ordered by their smallest InstanceNumber (acquisition order) and
    numbered by ``stack_index``. ``series_id`` defaults to the folder name when it is a number.

    A slice that cannot be used (not DICOM, corrupt, truncated, undecodable, missing geometry) is
    dropped with a warning; every stack lists them in ``meta["dropped_files"]`` as
    ``{"file": path, "error": one-line reason}``. Raises DicomError (one line naming the folder or file)
    when the folder is missing or empty, or when no slice is usable.
    """
    folder = Path(folder)
    if series_id is None:
        series_id = int(folder.name) if folder.name.isdigit() else 0
    files = list_dicom_files(folder)
    slices: list[_Slice] = []
    errors: list[tuple[Path, DicomError]] = []
    for p in files:
        try:
            slices.append(_read_slice(p))
        except DicomError as err:
            errors.append((p, err))
    slices, spacing_errors = _fill_spacing(folder, slices)
    errors.extend(spacing_errors)
    order = {p: i for i, p in enumerate(files)}
    errors.sort(key=lambda e: order.get(e[0], len(order)))
    if not slices:
        if len(errors) == 1:
            raise errors[0][1]
        raise DicomError(f"{folder}: no readable DICOM slice among {len(files)} files (first: {errors[0][1]})")
    dropped = []
    for path, err in errors:
        log.warning("slice dropped: %s", err)
        text = str(err)
        prefix = f"{path}: "
        dropped.append({"file": str(path), "error": text[len(prefix):] if text.startswith(prefix) else text})

    # InstanceNumber missing everywhere it cannot be recovered: number slices by file order so the
    # instance map stays a bijection, and say so.
    missing = [s for s in slices if s.instance is None]
    if missing:
        log.warning("%s: %d slice(s) without InstanceNumber; numbered by file order", folder, len(missing))
        used = {s.instance for s in slices if s.instance is not None}
        nxt = (max(used) if used else 0) + 1
        for s in missing:
            s.instance = nxt
            nxt += 1
    seen: dict[int, Path] = {}
    for s in slices:
        assert s.instance is not None
        if s.instance in seen:
            # Several series copied into one folder do this; each stack keeps its own map, but a label
            # on this InstanceNumber is ambiguous, so say it loudly.
            log.warning("%s: InstanceNumber %d appears twice (%s, %s)", folder, s.instance,
                        seen[s.instance].name, s.path.name)
        seen[s.instance] = s.path

    sizes = Counter(s.pixels.shape for s in slices)
    if len(sizes) > 1:
        shown = ", ".join(f"{c}x{r}: {n}" for (r, c), n in sorted(sizes.items()))
        log.warning("%s: slices have %d image sizes (%s); each size is its own stack", folder, len(sizes), shown)
    stacks = sorted(_group(slices, missing=len(dropped)), key=lambda st: min(s.instance or 0 for s in st))
    return [
        _to_volume(st, study_id=study_id, series_id=series_id, description=description, stack_index=i,
                   dropped=dropped)
        for i, st in enumerate(stacks)
    ]


def read_volume(
    folder: str | Path, *, study_id: int = 0, series_id: int | None = None, description: str = ""
) -> Volume:
    """The stack of a series with the most slices (ties: lowest ``stack_index``)."""
    stacks = read_series(folder, study_id=study_id, series_id=series_id, description=description)
    return max(stacks, key=lambda v: (v.shape[0], -v.stack_index))
