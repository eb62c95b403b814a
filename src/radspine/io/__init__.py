"""Data layer: DICOM series → volumes (:mod:`.dicom`) and the Kaggle dataset layout (:mod:`.dataset`).

Import from the submodules (``from radspine.io.dicom import read_series``); this package stays light.
"""
