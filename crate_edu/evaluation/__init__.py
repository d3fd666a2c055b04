"""Evaluation and analysis of trained models: numbers about a model, never pictures.

- ``batches``: :func:`iter_batches`, the one way images (and labels) are batched here;
- ``metrics``: predictions, accuracy, confusion matrix, per-class accuracy;
- ``flops``: the one FLOP formula (:func:`forward_flops`, :func:`forward_macs` by part);
- ``throughput``: measured images per second of training or inference;
- ``probe``: linear probes of frozen features, layer by layer;
- ``segmentation``: attention maps, mass-threshold masks, IoU scores, PCA and normalised-cut maps;
- ``layerwise``: compression and sparsity at every layer (the CRATE paper's layer-wise figure),
  for image models and for the language models;
- ``neurons``: a language model's sparse codes read as neurons: activations, sparsity, top
  contexts and an offline interpretability score;
- ``reconstruction``: CRATE-MAE masks, masked-patch loss and reconstruction panels;
- ``zero_shot``: CLIP-style zero-shot classification (class embeddings from prompt templates).

The pictures of these numbers are drawn by :mod:`crate_edu.plotting`.
"""

from crate_edu.evaluation import (
    batches,
    flops,
    layerwise,
    metrics,
    neurons,
    parameters,
    probe,
    reconstruction,
    segmentation,
    throughput,
    zero_shot,
)
from crate_edu.evaluation.batches import iter_batches
from crate_edu.evaluation.flops import forward_flops, forward_macs, layer_macs
from crate_edu.evaluation.layerwise import LayerwiseMeasurements, layerwise_measurements
from crate_edu.evaluation.metrics import Predictions, accuracy, confusion_matrix, per_class_accuracy, predict
from crate_edu.evaluation.neurons import (
    InterpretabilityComparison,
    LayerSparsity,
    NeuronActivations,
    NeuronContext,
    NeuronScores,
    TextFeatures,
    activation_sparsity,
    collect_activations,
    compare_interpretability,
    correlation_ratio,
    interpretability_scores,
    summarize_scores,
    text_features,
    top_contexts,
)
from crate_edu.evaluation.parameters import parameters_by_component, parameters_by_formula
from crate_edu.evaluation.probe import (
    ProbeResult,
    extract_features,
    extract_layer_features,
    linear_probe,
    pool_tokens,
    probe_layers,
)
from crate_edu.evaluation.reconstruction import (
    ReconstructionPanels,
    evaluate_reconstruction,
    mask_noise,
    mask_patches,
    masked_patch_loss,
    paste_visible,
    prediction_to_patches,
    reconstruct,
    unnormalize,
)
from crate_edu.evaluation.segmentation import (
    NCutResult,
    PCAMaps,
    PCAResult,
    SegmentationScore,
    border_mask,
    cls_attention_maps,
    fixed_mask_baseline,
    head_ious,
    head_projections,
    iou,
    layer_traces,
    masks_to_patches,
    mass_on_mask,
    mass_on_mask_with_control,
    mass_threshold_masks,
    ncut_foreground,
    patch_grid,
    pca,
    pca_maps,
    penultimate_layer,
    segmentation_score,
    upsample_maps,
)
from crate_edu.evaluation.throughput import (
    Throughput,
    inference_throughput,
    measure_throughput,
    train_throughput,
)
from crate_edu.evaluation.zero_shot import (
    ZeroShotPredictions,
    class_embeddings,
    evaluate_zero_shot,
    imagenet_classnames,
    imagenet_label_map,
    imagenet_templates,
    imagenet_wnids,
    zero_shot_logits,
    zero_shot_predict,
    zero_shot_transform,
)

__all__ = [
    # the modules, for namespaced use (``from crate_edu.evaluation import segmentation as seg``)
    "batches",
    "flops",
    "layerwise",
    "metrics",
    "neurons",
    "parameters",
    "probe",
    "reconstruction",
    "segmentation",
    "throughput",
    "zero_shot",
    # batches
    "iter_batches",
    # flops
    "forward_flops",
    "forward_macs",
    "layer_macs",
    # layerwise
    "LayerwiseMeasurements",
    "layerwise_measurements",
    # metrics
    "Predictions",
    "accuracy",
    "confusion_matrix",
    "per_class_accuracy",
    "predict",
    # neurons
    "InterpretabilityComparison",
    "LayerSparsity",
    "NeuronActivations",
    "NeuronContext",
    "NeuronScores",
    "TextFeatures",
    "activation_sparsity",
    "collect_activations",
    "compare_interpretability",
    "correlation_ratio",
    "interpretability_scores",
    "summarize_scores",
    "text_features",
    "top_contexts",
    # parameters
    "parameters_by_component",
    "parameters_by_formula",
    # probe
    "ProbeResult",
    "extract_features",
    "extract_layer_features",
    "linear_probe",
    "pool_tokens",
    "probe_layers",
    # reconstruction
    "ReconstructionPanels",
    "evaluate_reconstruction",
    "mask_noise",
    "mask_patches",
    "masked_patch_loss",
    "paste_visible",
    "prediction_to_patches",
    "reconstruct",
    "unnormalize",
    # segmentation
    "NCutResult",
    "PCAMaps",
    "PCAResult",
    "SegmentationScore",
    "border_mask",
    "cls_attention_maps",
    "fixed_mask_baseline",
    "head_ious",
    "head_projections",
    "iou",
    "layer_traces",
    "mass_on_mask",
    "mass_on_mask_with_control",
    "mass_threshold_masks",
    "masks_to_patches",
    "ncut_foreground",
    "patch_grid",
    "pca",
    "pca_maps",
    "penultimate_layer",
    "segmentation_score",
    "upsample_maps",
    # throughput
    "Throughput",
    "inference_throughput",
    "measure_throughput",
    "train_throughput",
    # zero_shot
    "ZeroShotPredictions",
    "class_embeddings",
    "evaluate_zero_shot",
    "imagenet_classnames",
    "imagenet_label_map",
    "imagenet_templates",
    "imagenet_wnids",
    "zero_shot_logits",
    "zero_shot_predict",
    "zero_shot_transform",
]
