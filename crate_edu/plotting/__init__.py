"""Plotting for the notebooks, kept apart from the computations it draws.

Every function here takes arrays or results computed elsewhere in ``crate_edu`` and returns the
matplotlib figure (or axes) it drew, so a notebook can style or save it and the numbers behind a
picture are always testable on their own. Submodules by topic: ``training`` (curves, confusion
matrices), ``segmentation`` (attention maps, masks, PCA maps), ``mae`` (reconstruction panels).
"""
