"""Experiments that only notebooks and benchmarks drive.

- ``crate_alpha_ablation``: train and measure each step of the CRATE-α ablation, count its
  multiply-adds, and set the published CRATE / CRATE-α ImageNet figures beside them.
"""

from crate_edu.experiments import crate_alpha_ablation
from crate_edu.experiments.crate_alpha_ablation import (  # noqa: F401 (re-exported: see __all__)
    ABLATION,
    PUBLISHED_ALPHA,
    PUBLISHED_CRATE,
    AblationRun,
    ablation_config,
    code_sparsity,
    crate_alpha_macs,
    published_crate_table,
    published_scaling_table,
    run_ablation,
    summarize,
)

__all__ = ["crate_alpha_ablation"]
__all__ += crate_alpha_ablation.__all__  # every public name of the module
