"""Plain DICOM exports (hospital PACS/CD dumps) → a Kaggle-layout view that every command can read.

A hospital export has no CSVs, mixes series in folders, uses any file names and nests folders. We read
headers only (:func:`scan_export`), group files by StudyInstanceUID / SeriesInstanceUID, split each series
into its blocks of parallel slices and type every block relative to the spine (:func:`radspine.geometry.plane_of`:
an axial block tilted up to 60° to follow L5/S1 is axial; a handful of slices in orthogonal planes is a
scout), type the series' weighting from its vendor description (falling back on TR/TE/TI), and materialise a
view (:func:`build_layout`) holding the blocks of the series' plane; a block left out is listed with why::

    <out>/<split>_images/<study_id>/<series_id>/<InstanceNumber>.dcm   (symlinks to the original files)
    <out>/<split>_series_descriptions.csv                              (typed series only)
    <out>/study_uids.csv       study_id, study_uid, source              (to map results back to the PACS)
    <out>/export_series.csv    every series with its decision and why   (typed and skipped)

Typing decisions are guesses; an override CSV (``series_id,series_description``, Kaggle format, see
:func:`read_overrides`) replaces them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radspine import constants as C
from radspine.errors import DatasetError

log = logging.getLogger(__name__)

# A series with fewer files cannot be a diagnostic volume (screenshots, single key images).
MIN_SLICES = 3
# Override value that removes a series from the view.
SKIP = "skip"

_TAGS = [
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SeriesNumber", "InstanceNumber",
    "SeriesDescription", "ProtocolName", "ImageOrientationPatient", "ImagePositionPatient", "ImageType", "Modality",
    "RepetitionTime", "EchoTime", "InversionTime", "ScanningSequence", "ContrastBolusAgent", "Rows",
]

# Keyword patterns on "SeriesDescription ProtocolName" (lower case). Boundaries are "not a letter or
# digit" so vendor spellings with _ - + / or none at all ("t2_tse_sag", "SAG T2 TSE", "T2W", "t2tse") match.
_B = r"(?<![a-z0-9])"
_LOCALIZER_RE = re.compile(_B + r"(loc|localizer|localiser|scout|survey|3[ _-]?pl(ane)?|tri[ _-]?pilot|"
                           r"aahead|pilot|plan|planning)(?![a-z])")
_STIR_RE = re.compile(_B + r"(stir|tirm|tir|t2[ _-]?stir)(?![a-z])")
_T2_RE = re.compile(_B + r"t2(?![0-9])")
_T1_RE = re.compile(_B + r"t1(?![0-9])")
_CONTRAST_RE = re.compile(r"\+c(?![a-z])|(?<![a-z])c\+|" + _B + r"(post|gad|gd|contrast)(?![a-z])")
_NONSTRUCT_RE = re.compile(_B + r"(dwi|diffusion|adc|trace|mip|myelo)(?![a-z])")
_ORIENT_WORDS = {"sagittal": re.compile(_B + r"sag"), "axial": re.compile(_B + r"(ax|tra)"),
                 "coronal": re.compile(_B + r"cor")}

# Slices whose normals differ by less than this belong to one block of parallel slices.
PARALLEL_TOL_DEG = 2.0
# A scout: blocks in planes at least this far apart, none of more than SCOUT_MAX_SLICES slices. Per-disc axial
# blocks differ by their tilts (< 60°) and are never a scout.
SCOUT_PLANE_ANGLE_DEG = 75.0
SCOUT_MAX_SLICES = 7


@dataclass
class Block:
    """One block of parallel slices of a series, typed relative to the spine."""

    normal: np.ndarray
    files: list[int]  # indices into the series' files
    plane: str  # sagittal / axial / coronal
    tilt_deg: float  # from that plane
    slab_mm: float  # extent along the normal

    def describe(self) -> str:
        """``axial 55° ×5``."""
        return f"{self.plane} {self.tilt_deg:.0f}° ×{len(self.files)}"


@dataclass
class SeriesScan:
    """One series of the export: its files, header facts and the typing decision with a human reason."""

    study_uid: str
    series_uid: str
    files: list[Path]
    series_number: int | None = None
    description: str = ""
    protocol: str = ""
    modality: str = ""
    image_type: tuple[str, ...] = ()
    orientations: dict[str, int] = field(default_factory=dict)  # dominant-axis name → file count
    tr: float | None = None
    te: float | None = None
    ti: float | None = None
    contrast_agent: str = ""
    instance_numbers: list[int | None] = field(default_factory=list)  # parallel to files
    normals: list[np.ndarray | None] = field(default_factory=list)  # slice normal per file (None: no IOP)
    positions: list[np.ndarray | None] = field(default_factory=list)  # ImagePositionPatient per file
    blocks: list[Block] = field(default_factory=list)  # set by classify_series (files with geometry only)
    left_out: list[int] = field(default_factory=list)  # file indices of blocks not in the series' plane
    study_id: int = 0
    series_id: int = 0
    orientation: str = "unknown"
    series_type: str | None = None  # one of constants.SERIES_TYPES, or None when skipped
    why: str = ""
    overridden: bool = False

    @property
    def n_files(self) -> int:
        """Number of (de-duplicated) image files."""
        return len(self.files)

    def kept_files(self) -> list[int]:
        """Indices of the files that go into the view (all but the left-out blocks)."""
        out = set(self.left_out)
        return [i for i in range(len(self.files)) if i not in out]

    def row(self) -> dict[str, Any]:
        """Flat dict for tables, JSON and ``export_series.csv``."""
        return {
            "study_id": self.study_id, "series_id": self.series_id, "files": self.n_files,
            "orientation": self.orientation, "series_type": self.series_type or "",
            "why": self.why, "blocks": ", ".join(b.describe() for b in self.blocks),
            "series_number": self.series_number, "description": self.description,
            "protocol": self.protocol, "tr": self.tr, "te": self.te, "ti": self.ti,
            "study_uid": self.study_uid, "series_uid": self.series_uid, "overridden": self.overridden,
        }


@dataclass
class StudyScan:
    """One study: its radspine id, StudyInstanceUID, source folder and series (sorted by series_id)."""

    study_uid: str
    study_id: int
    source: Path
    series: list[SeriesScan]


@dataclass
class ExportScan:
    """Result of :func:`scan_export`: studies plus counts of what was ignored."""

    root: Path
    studies: list[StudyScan]
    n_files: int = 0  # regular files visited
    n_images: int = 0  # DICOM image files kept
    non_dicom: int = 0  # files that are not DICOM (README, DICOMDIR-less junk, .jpg ...)
    non_image: int = 0  # DICOM without an image or study/series UID (DICOMDIR, SR, PR ...)
    duplicates: int = 0  # same SOPInstanceUID seen twice (exports often hold copies)
    non_dicom_examples: list[str] = field(default_factory=list)

    def all_series(self) -> list[SeriesScan]:
        """Every series of every study, in (study_id, series_id) order."""
        return [se for st in self.studies for se in st.series]

    def table(self) -> pd.DataFrame:
        """One row per series (see :meth:`SeriesScan.row`)."""
        rows = [se.row() for se in self.all_series()]
        return pd.DataFrame(rows, columns=list(SeriesScan("", "", []).row()))

    def summary(self) -> dict[str, Any]:
        """Counts for people and JSON."""
        typed = Counter(se.series_type for se in self.all_series() if se.series_type)
        return {
            "root": str(self.root), "studies": len(self.studies), "series": len(self.all_series()),
            "series_per_type": {t: typed[t] for t in C.SERIES_TYPES},
            "series_skipped": sum(1 for se in self.all_series() if not se.series_type),
            "files": self.n_files, "images": self.n_images, "non_dicom_files": self.non_dicom,
            "non_image_dicom_files": self.non_image, "duplicate_files": self.duplicates,
            "usable": any(se.series_type for se in self.all_series()),
        }


# ---------------------------------------------------------------- header reading


def _float(ds: Any, keyword: str) -> float | None:
    v = ds.get(keyword)
    if v is None or v == "":
        return None
    try:
        if isinstance(v, (list, tuple)) or getattr(v, "VM", 1) > 1:
            v = v[0]
        f = float(v)
    except (TypeError, ValueError, IndexError):
        return None
    return f if np.isfinite(f) else None


def _int(ds: Any, keyword: str) -> int | None:
    f = _float(ds, keyword)
    return int(f) if f is not None and float(f).is_integer() else None


def _normal_of(iop: Any) -> np.ndarray | None:
    """Unit slice normal from ImageOrientationPatient; None when absent or degenerate."""
    try:
        v = np.asarray([float(x) for x in iop], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if v.shape != (6,) or not np.all(np.isfinite(v)):
        return None
    n = np.cross(v[:3], v[3:])
    norm = np.linalg.norm(n)
    return None if norm < 1e-6 else n / norm


def _position_of(ipp: Any) -> np.ndarray | None:
    try:
        v = np.asarray([float(x) for x in ipp], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return v if v.shape == (3,) and np.all(np.isfinite(v)) else None


def _orientation_of(iop: Any) -> str:
    """'sagittal' / 'coronal' / 'axial' from the slice normal's dominant patient axis; 'unknown' if absent.

    Per file, as a first tally; series with geometry are typed per block by :func:`split_blocks`.
    """
    n = _normal_of(iop)
    if n is None:
        return "unknown"
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(n)))]


def _read_header(path: Path):
    """pydicom Dataset (header only) or None when the file is not DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError, AttributeError):
        # pydicom raises a wide range of errors on truncated or foreign files; all mean "not a DICOM image".
        return None


def _facts(ds: Any) -> dict[str, Any] | None:
    """What the scan needs from one header; None for DICOM without an image or study/series UID."""
    study_uid = str(ds.get("StudyInstanceUID", "") or "").strip()
    series_uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
    if not study_uid or not series_uid or ds.get("Rows") is None:
        return None
    image_type = ds.get("ImageType")
    if image_type is None or image_type == "":
        types: tuple[str, ...] = ()
    elif isinstance(image_type, str):
        types = (image_type,)
    else:
        types = tuple(str(v) for v in image_type)
    return {
        "study_uid": study_uid, "series_uid": series_uid,
        "sop": str(ds.get("SOPInstanceUID", "") or "").strip(),
        "instance": _int(ds, "InstanceNumber"),
        "orientation": _orientation_of(ds.get("ImageOrientationPatient")),
        "normal": _normal_of(ds.get("ImageOrientationPatient")),
        "position": _position_of(ds.get("ImagePositionPatient")),
        "series": {
            "study_uid": study_uid, "series_uid": series_uid, "series_number": _int(ds, "SeriesNumber"),
            "description": str(ds.get("SeriesDescription", "") or "").strip(),
            "protocol": str(ds.get("ProtocolName", "") or "").strip(),
            "modality": str(ds.get("Modality", "") or "").strip(), "image_type": types,
            "tr": _float(ds, "RepetitionTime"), "te": _float(ds, "EchoTime"), "ti": _float(ds, "InversionTime"),
            "contrast_agent": str(ds.get("ContrastBolusAgent", "") or "").strip(),
        },
    }


def _iter_files(root: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


# ---------------------------------------------------------------- typing


def _weighting_from_text(text: str) -> tuple[str | None, str]:
    """('T1' | 'T2' | 'STIR' | None, matched keyword) from description + protocol text."""
    t = text.lower()
    m = _STIR_RE.search(t)
    if m:
        return "STIR", m.group(0)
    m1, m2 = _T1_RE.search(t), _T2_RE.search(t)
    if m1 and not m2:
        return "T1", m1.group(0)
    if m2 and not m1:
        return "T2", m2.group(0)
    return None, ""


def _weighting_from_timing(tr: float | None, te: float | None, ti: float | None) -> tuple[str | None, str]:
    """Sequence parameters as tie-breaker: STIR has TI ~100-250 ms; T1 short TR/TE; T2 long TR/TE."""
    if ti is not None and 100.0 <= ti <= 250.0:
        return "STIR", f"InversionTime {ti:g} ms"
    if tr is None or te is None:
        return None, ""
    if ti is not None and ti > 250.0:
        # FLAIR-type inversion: not one of the three series radspine grades on.
        return None, f"InversionTime {ti:g} ms (FLAIR-like)"
    if tr < 1000.0 and te < 30.0:
        return "T1", f"TR {tr:g} / TE {te:g} ms (short: T1)"
    if tr >= 1500.0 and te >= 60.0:
        return "T2", f"TR {tr:g} / TE {te:g} ms (long: T2)"
    return None, f"TR {tr:g} / TE {te:g} ms (neither T1 nor T2 pattern)"


def split_blocks(se: SeriesScan) -> list[Block]:
    """The series' blocks of parallel slices (files with ImageOrientationPatient only), typed by
    :func:`radspine.geometry.plane_of`.

    Slices go to one block when their normals agree within :data:`PARALLEL_TOL_DEG` (either direction); a
    block is cut where the spacing along the normal jumps (two discs' blocks at one tilt are two blocks).
    """
    from radspine.geometry import plane_of

    cos_tol = float(np.cos(np.radians(PARALLEL_TOL_DEG)))
    groups: list[tuple[np.ndarray, list[int]]] = []
    for i, n in enumerate(se.normals):
        if n is None:
            continue
        for ref, members in groups:
            if abs(float(ref @ n)) >= cos_tol:
                members.append(i)
                break
        else:
            groups.append((n, [i]))
    blocks: list[Block] = []
    for ref, members in groups:
        placed = [i for i in members if i < len(se.positions) and se.positions[i] is not None]
        unplaced = [i for i in members if i not in set(placed)]
        parts: list[list[int]] = [placed] if placed else []
        if len(placed) >= 3:
            order = sorted(placed, key=lambda i: float(se.positions[i] @ ref))
            off = np.array([float(se.positions[i] @ ref) for i in order])
            d = np.diff(off)
            moving = d[d > 0.1]
            step = float(np.median(moving)) if moving.size else 0.0
            cuts = [k + 1 for k, v in enumerate(d) if step > 0 and v > 2.5 * step and v > 1.0]
            parts = [list(p) for p in np.split(np.array(order), cuts)]
        if unplaced:
            if parts:
                parts[0].extend(unplaced)
            else:
                parts = [unplaced]
        for part in parts:
            off = [float(se.positions[i] @ ref) for i in part if i < len(se.positions) and se.positions[i] is not None]
            slab = float(np.ptp(off)) if len(off) > 1 else 0.0
            plane, tilt = plane_of(ref, slab)
            blocks.append(Block(normal=ref, files=[int(i) for i in part], plane=plane, tilt_deg=tilt, slab_mm=slab))
    return blocks


def _is_scout(blocks: list[Block]) -> bool:
    """Small blocks in planes at right angles (a 2- or 3-plane localizer), as opposed to a series of tilted
    per-disc blocks (never more than ~60° apart)."""
    if len(blocks) < 2 or max(len(b.files) for b in blocks) > SCOUT_MAX_SLICES:
        return False
    cos_max = float(np.cos(np.radians(SCOUT_PLANE_ANGLE_DEG)))
    return any(abs(float(a.normal @ b.normal)) <= cos_max for k, a in enumerate(blocks) for b in blocks[k + 1:])


def _n_planes(blocks: list[Block]) -> int:
    """Number of distinct dominant patient axes among the blocks' normals."""
    return len({int(np.argmax(np.abs(b.normal))) for b in blocks})


def classify_series(se: SeriesScan) -> None:
    """Set ``orientation``, ``series_type``, ``blocks``, ``left_out`` and ``why`` on one series (in place).

    Series whose files carry ImageOrientationPatient are typed block by block (:func:`split_blocks`): the
    series takes the plane (sagittal or axial) holding most of its files, and blocks in another plane are left
    out of the view and named in ``why``. Series without geometry fall back on the per-file tally.
    """
    text = " ".join(dict.fromkeys(t for t in (se.description, se.protocol) if t))
    shown = repr(text) if text else "no description"
    se.blocks = split_blocks(se) if any(n is not None for n in se.normals) else []
    se.left_out = []
    counts: Counter[str] = Counter()
    if se.blocks:
        for b in se.blocks:
            counts[b.plane] += len(b.files)
    else:
        counts = Counter({k: v for k, v in se.orientations.items() if k != "unknown"})
    if counts:
        usable = [p for p in ("sagittal", "axial") if counts[p]]
        se.orientation = max(usable, key=lambda p: counts[p]) if usable else counts.most_common(1)[0][0]
    else:
        words = [k for k, rx in _ORIENT_WORDS.items() if rx.search(text.lower())]
        se.orientation = words[0] if len(words) == 1 else "unknown"
    se.series_type = None

    def skip(reason: str) -> None:
        se.why = f"skipped: {reason}"

    if se.modality and se.modality.upper() != "MR":
        return skip(f"modality {se.modality}, not MR")
    if any(v.upper() == "LOCALIZER" for v in se.image_type):
        return skip("localizer/scout (ImageType LOCALIZER)")
    if se.blocks and _is_scout(se.blocks):
        se.orientation = "mixed"
        return skip(f"localizer/scout ({se.n_files} files in {_n_planes(se.blocks)} orientations at right angles)")
    if not se.blocks and len(counts) >= 3:
        se.orientation = "mixed"
        return skip(f"localizer/scout ({se.n_files} files in 3 orientations)")
    m = _LOCALIZER_RE.search(text.lower())
    if m and se.n_files <= 30:
        return skip(f"localizer/scout ({m.group(0)!r} in {shown})")
    if not se.blocks and len(counts) == 2 and se.n_files <= 10:
        return skip(f"localizer/scout ({se.n_files} files in 2 orientations)")
    if se.n_files < MIN_SLICES:
        return skip(f"only {se.n_files} image file(s)")
    m = _NONSTRUCT_RE.search(text.lower())
    if m:
        return skip(f"not a structural T1/T2/STIR series ({m.group(0)!r} in {shown})")
    if se.orientation not in ("sagittal", "axial"):
        detail = ", ".join(b.describe() for b in se.blocks)
        return skip(f"{se.orientation} orientation" + (f" ({detail})" if detail else "")
                    + (" (no ImageOrientationPatient)" if se.orientation == "unknown" else ""))
    note = ""
    if se.blocks:
        mine = [b for b in se.blocks if b.plane == se.orientation]
        other = [b for b in se.blocks if b.plane != se.orientation]
        se.left_out = sorted(i for b in other for i in b.files)
        if len(se.files) - len(se.left_out) < MIN_SLICES:
            return skip(f"only {len(se.files) - len(se.left_out)} {se.orientation} image file(s) "
                        f"({', '.join(b.describe() for b in se.blocks)})")
        tilts = sorted({round(b.tilt_deg) for b in mine})
        if len(mine) > 1 or tilts[-1] >= 10:
            note = f"; {len(mine)} block{'s' if len(mine) > 1 else ''} tilted {'/'.join(f'{t}°' for t in tilts)}"
        left = "; left out: " + ", ".join(f"{b.describe()} (not {se.orientation})" for b in other) if other else ""
    else:
        left = ""
        if len(counts) == 2:
            o = [k for k in counts if k != se.orientation][0]
            if counts[o] > 0.2 * se.n_files:
                return skip(f"mixed orientations ({dict(counts)})")

    weight, key = _weighting_from_text(text)
    if weight is not None:
        how = f"{key!r} in {shown}"
    else:
        weight, how = _weighting_from_timing(se.tr, se.te, se.ti)
        if weight is None:
            return skip(f"unknown weighting ({shown}" + (f"; {how}" if how else "; no TR/TE") + ")")
    if weight == "T1" and (se.contrast_agent or _CONTRAST_RE.search(text.lower())):
        return skip(f"post-contrast T1 ({shown})")
    plane = "sagittal" if se.orientation == "sagittal" else "axial"
    if plane == "sagittal":
        se.series_type = C.SAG_T1 if weight == "T1" else C.SAG_T2
    elif weight == "T2":
        se.series_type = C.AX_T2
    else:
        se.left_out = []
        return skip(f"axial {weight} (radspine reads axial T2 only; {how})")
    se.why = f"{plane} (ImageOrientationPatient{note}) + {weight} ({how}){left}"


# ---------------------------------------------------------------- ids


def stable_id(text: str, taken: set[int] | None = None) -> int:
    """Deterministic int < 2**31 from a UID (first 8 bytes of sha256); re-salted on collision with ``taken``."""
    taken = taken if taken is not None else set()
    salt = 0
    while True:
        h = hashlib.sha256((text if salt == 0 else f"{text}#{salt}").encode()).digest()
        v = int.from_bytes(h[:8], "big") % (2**31)
        if v not in taken:
            return v
        salt += 1


def _study_folders(root: Path, files_by_study: dict[str, list[Path]]) -> dict[str, Path] | None:
    """Top-level folder of each study if the export has one folder per study (no sharing), else None."""
    tops: dict[str, Path] = {}
    for uid, files in files_by_study.items():
        firsts = {f.relative_to(root).parts[0] for f in files if len(f.relative_to(root).parts) > 1}
        if len(firsts) != 1 or any(len(f.relative_to(root).parts) == 1 for f in files):
            return None
        tops[uid] = root / firsts.pop()
    if len(set(tops.values())) != len(tops):
        return None
    return tops


def _common_folder(files: list[Path]) -> Path:
    return Path(os.path.commonpath([str(f.parent) for f in files]))


def _assign_ids(root: Path, studies: dict[str, list[SeriesScan]]) -> list[StudyScan]:
    files_by_study = {uid: [f for se in sers for f in se.files] for uid, sers in studies.items()}
    tops = _study_folders(root, files_by_study)
    out: list[StudyScan] = []
    taken: set[int] = set()
    named: dict[str, int] = {}
    if tops is not None:
        for uid, folder in tops.items():
            if folder.name.isdigit() and int(folder.name) < 2**63 and int(folder.name) not in taken:
                named[uid] = int(folder.name)
                taken.add(named[uid])
    elif len(studies) == 1 and root.name.isdigit() and int(root.name) < 2**63:
        # --dicom pointed at one study folder named by its id.
        named[next(iter(studies))] = int(root.name)
        taken.add(int(root.name))
    for uid in sorted(studies):
        sid = named.get(uid)
        if sid is None:
            sid = stable_id(uid, taken)
            taken.add(sid)
        source = tops[uid] if tops is not None else (root if len(studies) == 1 else _common_folder(files_by_study[uid]))
        sers = studies[uid]
        numbers = Counter(se.series_number for se in sers if se.series_number is not None and se.series_number >= 0)
        used: set[int] = set()
        for se in sorted(sers, key=lambda s: (s.series_number if s.series_number is not None else 1 << 62, s.series_uid)):
            n = se.series_number
            if n is not None and n >= 0 and numbers[n] == 1 and n not in used:
                se.series_id = n
            else:
                se.series_id = stable_id(se.series_uid, used | set(numbers))
            used.add(se.series_id)
            se.study_id = sid
        out.append(StudyScan(study_uid=uid, study_id=sid, source=source,
                             series=sorted(sers, key=lambda s: s.series_id)))
    return sorted(out, key=lambda s: s.study_id)


# ---------------------------------------------------------------- scan


def scan_export(dicom_dir: str | Path, overrides: str | Path | pd.DataFrame | None = None) -> ExportScan:
    """Scan a folder of DICOM files (any names, nested folders) and type every series from its headers.

    Non-DICOM files and DICOM files without an image are ignored and counted. ``overrides`` (a path to a
    ``series_id,series_description`` CSV or its DataFrame) replaces the guessed types.

    Raises:
        DatasetError: the folder does not exist or holds no DICOM image; a bad override CSV.
    """
    root = Path(dicom_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: DICOM folder does not exist")
    root = root.resolve()
    scan = ExportScan(root=root, studies=[])
    series: dict[tuple[str, str], SeriesScan] = {}
    seen_sop: set[str] = set()
    for path in _iter_files(root):
        scan.n_files += 1
        ds = _read_header(path)
        if ds is None:
            scan.non_dicom += 1
            if len(scan.non_dicom_examples) < 5:
                scan.non_dicom_examples.append(str(path))
            continue
        try:
            facts = _facts(ds)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as err:
            # A header pydicom cannot convert (malformed VR values): skip the file, keep the batch going.
            log.warning("%s: unreadable DICOM header (%s); ignored", path, str(err).splitlines()[0] if str(err) else err)
            scan.non_image += 1
            continue
        if facts is None:
            scan.non_image += 1
            continue
        if facts["sop"]:
            if facts["sop"] in seen_sop:
                scan.duplicates += 1
                continue
            seen_sop.add(facts["sop"])
        key = (facts["study_uid"], facts["series_uid"])
        se = series.get(key)
        if se is None:
            se = series[key] = SeriesScan(files=[], **facts["series"])
        se.files.append(path)
        se.instance_numbers.append(facts["instance"])
        se.normals.append(facts["normal"])
        se.positions.append(facts["position"])
        se.orientations[facts["orientation"]] = se.orientations.get(facts["orientation"], 0) + 1
        scan.n_images += 1
    if not series:
        extra = f" ({scan.non_dicom} non-DICOM files, e.g. {scan.non_dicom_examples[0]})" if scan.non_dicom_examples else ""
        raise DatasetError(f"{root}: no DICOM image files found in {scan.n_files} files{extra}")
    for se in series.values():
        classify_series(se)
    by_study: dict[str, list[SeriesScan]] = defaultdict(list)
    for (study_uid, _), se in series.items():
        by_study[study_uid].append(se)
    scan.studies = _assign_ids(root, by_study)
    if overrides is not None:
        apply_overrides(scan, overrides)
    return scan


# ---------------------------------------------------------------- overrides


def read_overrides(path: str | Path) -> pd.DataFrame:
    """Override CSV → DataFrame[study_id (may be blank), series_id, series_description], all strings.

    Columns ``series_id`` and ``series_description`` are required, ``study_id`` optional (Kaggle's
    ``*_series_descriptions.csv`` works as is). ``series_id`` is radspine's id (see ``radspine inspect
    --dicom``) or the SeriesInstanceUID; ``series_description`` is one of the three types or ``skip``.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: series-types CSV does not exist")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: not a readable CSV ({' '.join(str(err).split())[:120]})") from None
    df.columns = [str(c).strip() for c in df.columns]
    for col in ("series_id", "series_description"):
        if col not in df.columns:
            raise DatasetError(f"{path}: missing column {col!r} (header is {', '.join(df.columns)}; "
                               "expected series_id,series_description)")
    if "study_id" not in df.columns:
        df["study_id"] = ""
    out = df[["study_id", "series_id", "series_description"]].apply(lambda s: s.str.strip())
    out.attrs["path"] = str(path)
    return out


def apply_overrides(scan: ExportScan, overrides: str | Path | pd.DataFrame) -> int:
    """Replace guessed types with the override table's; return how many series changed.

    Raises DatasetError naming the CSV row for an unknown series, an ambiguous id or an unknown type.
    """
    df = overrides if isinstance(overrides, pd.DataFrame) else read_overrides(overrides)
    name = df.attrs.get("path", "series-types CSV")
    by_uid = {se.series_uid: se for se in scan.all_series()}
    by_id: dict[int, list[SeriesScan]] = defaultdict(list)
    for se in scan.all_series():
        by_id[se.series_id].append(se)
    allowed = {t.lower(): t for t in C.SERIES_TYPES}
    changed = 0
    for i, (study, ser, desc) in enumerate(df[["study_id", "series_id", "series_description"]].itertuples(index=False)):
        where = f"{name}, row {i + 1}"
        if desc.lower() in allowed:
            new: str | None = allowed[desc.lower()]
        elif desc.lower() in (SKIP, ""):
            new = None
        else:
            raise DatasetError(f"{where}, column 'series_description': unknown value {desc!r} "
                               f"(allowed: {', '.join(C.SERIES_TYPES)} or {SKIP!r})")
        if ser in by_uid:
            targets = [by_uid[ser]]
        elif ser.isdigit():
            targets = by_id.get(int(ser), [])
            if study:
                if not study.isdigit():
                    raise DatasetError(f"{where}, column 'study_id': expected an integer, got {study!r}")
                targets = [se for se in targets if se.study_id == int(study)]
            if len(targets) > 1:
                raise DatasetError(f"{where}: series_id {ser} exists in studies "
                                   f"{sorted(se.study_id for se in targets)}; add a study_id column")
        else:
            targets = []
        if not targets:
            raise DatasetError(f"{where}, column 'series_id': no series {ser!r} in {scan.root} "
                               "(use the ids `radspine inspect --dicom` prints, or a SeriesInstanceUID)")
        se = targets[0]
        old = se.series_type
        se.series_type = new
        se.overridden = True
        se.why = f"override ({name}): {new or SKIP}" + (f"; guess was {old or 'skip'}" if old != new else "")
        changed += old != new
    return changed


# ---------------------------------------------------------------- the view


def _instance_names(se: SeriesScan) -> list[tuple[str, Path]]:
    """(file name, source) per file of the view (left-out blocks excluded): ``<InstanceNumber>.dcm`` when those
    are unique, else ``<k>.dcm``.

    The readers fall back on the file stem only when InstanceNumber is absent, and points CSVs carry
    instance numbers, so keeping InstanceNumber as the name keeps both consistent.
    """
    keep = se.kept_files()
    nums = [se.instance_numbers[i] for i in keep]
    files = [se.files[i] for i in keep]
    if all(n is not None and n >= 0 for n in nums) and len(set(nums)) == len(nums):
        return [(f"{n}.dcm", f) for n, f in sorted(zip(nums, files), key=lambda t: t[0])]
    order = sorted(range(len(files)), key=lambda k: (nums[k] if nums[k] is not None else 1 << 62, str(files[k])))
    return [(f"{k + 1}.dcm", files[i]) for k, i in enumerate(order)]


def build_layout(scan: ExportScan, out_dir: str | Path, split: str = "test") -> Path:
    """Write the Kaggle-layout view of ``scan`` at ``out_dir`` (replacing an earlier view); return it.

    Typed series get symlinks (copies where symlinks fail); every study gets a folder, even one with no
    typed series, so predictions still cover it (from priors). Built in a temporary folder and renamed.

    Raises:
        DatasetError: ``out_dir`` exists and is not a view written by this function.
    """
    out = Path(out_dir)
    if out.exists() and not (out / "study_uids.csv").is_file():
        raise DatasetError(f"{out}: exists and is not a radspine DICOM view (no study_uids.csv); "
                           "choose an empty work folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    use_links = True
    try:
        images = tmp / f"{split}_images"
        images.mkdir()
        desc_rows, uid_rows = [], []
        for st in scan.studies:
            sdir = images / str(st.study_id)
            sdir.mkdir()
            uid_rows.append({"study_id": st.study_id, "study_uid": st.study_uid, "source": str(st.source)})
            for se in st.series:
                if not se.series_type:
                    continue
                d = sdir / str(se.series_id)
                d.mkdir()
                for name, src in _instance_names(se):
                    if use_links:
                        try:
                            os.symlink(src.resolve(), d / name)
                            continue
                        except OSError as err:
                            log.warning("symlinks unavailable in %s (%s); copying the files instead", out, err)
                            use_links = False
                    shutil.copy2(src, d / name)
                desc_rows.append({"study_id": st.study_id, "series_id": se.series_id,
                                  "series_description": se.series_type})
        pd.DataFrame(desc_rows, columns=["study_id", "series_id", "series_description"]).to_csv(
            tmp / f"{split}_series_descriptions.csv", index=False)
        pd.DataFrame(uid_rows, columns=["study_id", "study_uid", "source"]).to_csv(tmp / "study_uids.csv", index=False)
        scan.table().to_csv(tmp / "export_series.csv", index=False)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_study_uids(view: str | Path) -> dict[int, str]:
    """study_id → StudyInstanceUID from a view's ``study_uids.csv``."""
    df = pd.read_csv(Path(view) / "study_uids.csv", dtype={"study_id": "int64", "study_uid": str})
    return dict(zip(df["study_id"].astype(int), df["study_uid"].astype(str)))


def scan_to_dict(scan: ExportScan) -> dict[str, Any]:
    """JSON-ready summary + every series row + the study map."""
    return {
        **scan.summary(),
        "non_dicom_examples": list(scan.non_dicom_examples),
        "studies_list": [{"study_id": st.study_id, "study_uid": st.study_uid, "source": str(st.source),
                          "series": len(st.series)} for st in scan.studies],
        "series_list": [{k: v for k, v in se.row().items()} for se in scan.all_series()],
    }


__all__ = [
    "Block", "ExportScan", "SeriesScan", "StudyScan", "apply_overrides", "build_layout", "classify_series",
    "split_blocks",
    "read_overrides", "read_study_uids", "scan_export", "scan_to_dict", "stable_id",
]
