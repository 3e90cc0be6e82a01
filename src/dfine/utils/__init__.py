"""Helpers every layer may use: safe file writes (:mod:`~dfine.utils.files`), argument checks
(:mod:`~dfine.utils.checks`), device selection (:mod:`~dfine.utils.device`) and lazily imported package names
(:mod:`~dfine.utils.lazy`)."""
