"""Plotting for the notebooks, kept apart from the computations it draws.

Every function here takes arrays or results computed elsewhere in ``crate_edu`` and returns the
matplotlib figure (or axes) it drew, so a notebook can style or save it and the numbers behind a
picture are always testable on their own. Submodules by topic: ``training`` (curves, confusion
matrices, throughput), ``segmentation`` (attention maps, masks, PCA maps), ``mae``
(reconstruction panels, probes by layer), ``crate_alpha`` (the ablation and the scaling table),
``language`` (the layer-wise figure for text, neurons' top contexts, the neuron browser, the
interpretability comparison).
"""

from crate_edu.plotting import crate_alpha, language, mae, segmentation, training
from crate_edu.plotting.crate_alpha import plot_ablation, plot_scaling
from crate_edu.plotting.language import (
    contexts_html,
    display_text,
    neuron_browser,
    plot_interpretability,
    plot_layerwise_language,
    plot_neuron_contexts,
)
from crate_edu.plotting.mae import (
    plot_attention_grid,
    plot_mae_loss,
    plot_probe_accuracies,
    plot_probe_by_layer,
    plot_reconstruction_panels,
)
from crate_edu.plotting.segmentation import (
    mask_overlay,
    plot_fraction_sweep,
    plot_head_maps,
    plot_head_masks,
    plot_iou_grid,
    plot_ncut,
    plot_pca_maps,
    to_display,
)
from crate_edu.plotting.training import (
    plot_confusion_matrix,
    plot_curves,
    plot_per_class_accuracy,
    plot_throughput,
)

__all__ = [
    # the modules, for namespaced use (``from crate_edu.plotting import segmentation as pseg``)
    "crate_alpha",
    "language",
    "mae",
    "segmentation",
    "training",
    # crate_alpha
    "plot_ablation",
    "plot_scaling",
    # language
    "contexts_html",
    "display_text",
    "neuron_browser",
    "plot_interpretability",
    "plot_layerwise_language",
    "plot_neuron_contexts",
    # mae
    "plot_attention_grid",
    "plot_mae_loss",
    "plot_probe_accuracies",
    "plot_probe_by_layer",
    "plot_reconstruction_panels",
    # segmentation
    "mask_overlay",
    "plot_fraction_sweep",
    "plot_head_maps",
    "plot_head_masks",
    "plot_iou_grid",
    "plot_ncut",
    "plot_pca_maps",
    "to_display",
    # training
    "plot_confusion_matrix",
    "plot_curves",
    "plot_per_class_accuracy",
    "plot_throughput",
]
