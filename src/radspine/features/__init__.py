"""Feature extraction: radiomics (:mod:`.radiomics`), CNN embeddings (:mod:`.embeddings`), the table (:mod:`.table`).

Submodules are imported explicitly by callers so that importing the package stays cheap.
"""
