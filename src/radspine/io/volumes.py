"""One study reader for every stage: the stacks of a study by role, plus why anything is missing.

Localize and features both read studies through :func:`load_study_volumes`, so they see the same stacks
(a series labelled "Sagittal T2" that is really axial is unusable for its role in both) and a caller can
read a study once and hand the same :class:`StudyVolumes` to both stages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from radspine.constants import AX_T2, SAG_T1, SAG_T2, SERIES_TYPES
from radspine.errors import RadspineError
from radspine.geometry import orientation_of
from radspine.types import Study, Volume

log = logging.getLogger(__name__)


@dataclass
class StudyVolumes:
    """The readable stacks of one study.

    ``sag_t2`` / ``sag_t1``: the largest correctly oriented stack of the first readable series of that type
    (what the localizer scans); ``axial``: every axial stack of every Axial T2 series; ``extra``: other
    readable stacks of known types (a second T1 series, the smaller stacks of a multi-stack series), still
    used to resolve labelled points and cut patches. ``problems``: series type → why it is missing or partial.
    """

    sag_t2: Volume | None = None
    sag_t1: Volume | None = None
    axial: list[Volume] = field(default_factory=list)
    extra: list[Volume] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)
    study_id: int = 0

    def stacks(self, series_type: str) -> list[Volume]:
        """Every usable stack of one series type (primary first)."""
        if series_type == AX_T2:
            return list(self.axial)
        primary = self.sag_t2 if series_type == SAG_T2 else self.sag_t1 if series_type == SAG_T1 else None
        rest = [v for v in self.extra if v.description == series_type]
        return ([primary] if primary is not None else []) + rest

    def all(self) -> list[Volume]:
        """Every usable stack of the study."""
        return [v for t in SERIES_TYPES for v in self.stacks(t)]

    def find(self, series_id: int, instance_number: int) -> Volume | None:
        """The stack holding this series' instance, if any."""
        for v in self.all():
            if v.series_id == series_id and np.any(v.instance_numbers == instance_number):
                return v
        return None

    def problem_list(self) -> list[str]:
        """``problems`` as one line per series type, for logs and meta.json."""
        return [why for why in self.problems.values() if why]


def load_study_volumes(study: Study) -> StudyVolumes:
    """Read every Sagittal T2/STIR, Sagittal T1 and Axial T2 series of a study.

    A series that cannot be read, or whose stacks are not in its role's orientation, is recorded in
    ``problems`` and left out; the study still goes on with the rest (never raised).
    """
    from radspine.io.dicom import read_series

    out = StudyVolumes(study_id=int(study.study_id))
    for desc in (SAG_T2, SAG_T1, AX_T2):
        infos = study.series_of_type(desc)
        if not infos:
            out.problems[desc] = f"no {desc} series"
            continue
        want = "axial" if desc == AX_T2 else "sagittal"
        errors: list[str] = []
        for info in infos:
            try:
                stacks = read_series(info.path, study_id=study.study_id, series_id=info.series_id, description=desc)
            except RadspineError as err:
                errors.append(str(err))
                log.warning("study %s series %s (%s) skipped: %s", study.study_id, info.series_id, desc, err)
                continue
            fitting = [v for v in stacks if orientation_of(v) == want]
            if not fitting:
                errors.append(f"series {info.series_id} is not {want} ({orientation_of(stacks[0])})")
                continue
            if desc == AX_T2:
                out.axial.extend(fitting)
                continue
            fitting.sort(key=lambda v: -v.pixels.shape[0])
            attr = "sag_t2" if desc == SAG_T2 else "sag_t1"
            if getattr(out, attr) is None:
                setattr(out, attr, fitting[0])
                out.extra.extend(fitting[1:])
            else:
                out.extra.extend(fitting)
        got = bool(out.stacks(desc))
        if not got:
            out.problems[desc] = f"unreadable {desc}: {errors[0] if errors else 'no stack'}"
        elif errors:
            out.problems[desc] = f"some {desc} unreadable: {errors[0]}"
    return out
