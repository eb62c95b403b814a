"""Synthetic lumbar spine MRI phantom in the RSNA 2024 LSDC Kaggle layout (``radspine synth``).

Public API: :func:`make_dataset` (render + write a labelled dataset; ``preset="rsna"`` for real-size series:
matrices from the real mix, 260-400 mm sagittal FOVs, 15-24 sagittal / 25-60 axial slices, 16-bit data, some
series JPEG-LS / JPEG 2000 / RLE lossless), :func:`sample_labels` (labels only, no images),
:class:`QuirkConfig` (rates of the real data's quirks and of the harder variations: off-centre spine, large
FOV, cropped-out spine, random contrast tables, lower-discs-only axials, compression), :class:`Patient`
(the 3D anatomy).

Domain randomisation: :func:`label_volumes` ``(seed, index, size=..., quirks=..., preset=...)`` returns, for
study ``index`` of the dataset that :func:`make_dataset` writes with the same arguments, one
:class:`SeriesLabels` per series: the integer tissue label map ``labels`` (S, rows, cols) uint8 sampled at
each pixel centre of that series' grid (codes :data:`TISSUE_LABELS`: 0 background, 1 cortical bone,
2 body marrow, 3 posterior-element marrow, 4 annulus, 5 nucleus, 6 CSF, 7 cord, 8 nerve roots, 9 fat,
10 muscle, 11 viscera, 12 vessel, 13 ligament, 14 joint fluid; :data:`LABEL_GROUPS` merges them into bone,
disc, csf, cord_roots, ...) with the files' exact DICOM geometry (positions, cosines, pixel spacing, instance
numbers; ``.volumes()`` gives sorted :class:`radspine.types.Volume` stacks). A localizer trainer paints its
own random intensity per label; :func:`random_table` draws such a table in the phantom's own way.
"""

from radspine.synth.anatomy import LABEL_GROUPS, TISSUE_LABELS, Patient, random_table
from radspine.synth.labels import sample_labels
from radspine.synth.quirks import QuirkConfig
from radspine.synth.write import SeriesLabels, label_volumes, make_dataset, study_ids, study_patients

__all__ = ["make_dataset", "study_ids", "study_patients", "sample_labels", "QuirkConfig", "Patient", "label_volumes", "SeriesLabels",
           "TISSUE_LABELS", "LABEL_GROUPS", "random_table"]
