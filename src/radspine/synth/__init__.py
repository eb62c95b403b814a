"""Synthetic lumbar spine MRI phantom in the RSNA 2024 LSDC Kaggle layout (``radspine synth``).

Public API: :func:`make_dataset` (render + write a labelled dataset), :func:`sample_labels` (labels only,
no images), :class:`QuirkConfig` (rates of the real data's quirks), :class:`Patient` (the 3D anatomy).
"""

from radspine.synth.anatomy import Patient
from radspine.synth.labels import sample_labels
from radspine.synth.quirks import QuirkConfig
from radspine.synth.write import make_dataset

__all__ = ["make_dataset", "sample_labels", "QuirkConfig", "Patient"]
