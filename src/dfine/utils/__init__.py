"""Helpers every layer may use: safe file writes (:mod:`~dfine.utils.files`), argument checks
(:mod:`~dfine.utils.checks`) and device selection (:mod:`~dfine.utils.device`)."""
