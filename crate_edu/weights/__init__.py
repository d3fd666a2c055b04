"""Weights and checkpoints: reading, checking, downloading and writing them.

- ``reader``: the one safe reader of checkpoint files;
- ``files``: crate_edu's safetensors weights files (the model's name and overrides in the header);
- ``atomic``: writes that never leave a torn file;
- ``download``: the one cache folder (``$CRATE_EDU_CACHE``) and the one verified download path;
- ``structure``: which family a state dict belongs to and how it differs from a model;
- ``official``: the published CRATE, CRATE-α, CRATE-MAE and CRATE-LM checkpoints (``load_official``, ...);
- ``tutorial``: training runs exported as weights files, and the small models shipped with the package.
"""

from crate_edu.renamed import renamed_name
from crate_edu.weights.atomic import FileWriteError
from crate_edu.weights.download import WeightsUnavailableError, default_cache_dir
from crate_edu.weights.files import (
    WeightsFileError,
    WeightsInfo,
    is_weights_file,
    read_weights_info,
    save_weights,
)
from crate_edu.weights.official import (
    OFFICIAL_WEIGHTS,
    OfficialWeights,
    cache_path,
    download_official,
    get_official,
    list_official,
    load_official,
    verify_checkpoint,
)
from crate_edu.weights.reader import CheckpointError, read_checkpoint_file, read_state_dict, sha256sum
from crate_edu.weights.structure import (
    StructureReport,
    compare_structure,
    detect_family,
    expected_shapes,
    infer_overrides,
)
from crate_edu.weights.tutorial import (
    TUTORIAL_CHECKPOINTS,
    TutorialCheckpoint,
    load_tutorial_model,
    load_weights,
    rebuild_model,
    shipped_checkpoint_dir,
    tutorial_checkpoint,
)

__all__ = [
    "OFFICIAL_WEIGHTS",
    "TUTORIAL_CHECKPOINTS",
    "CheckpointError",
    "FileWriteError",
    "OfficialWeights",
    "StructureReport",
    "TutorialCheckpoint",
    "WeightsFileError",
    "WeightsInfo",
    "WeightsUnavailableError",
    "cache_path",
    "compare_structure",
    "default_cache_dir",
    "detect_family",
    "download_official",
    "expected_shapes",
    "get_official",
    "infer_overrides",
    "is_weights_file",
    "list_official",
    "load_official",
    "load_tutorial_model",
    "load_weights",
    "rebuild_model",
    "read_checkpoint_file",
    "read_state_dict",
    "read_weights_info",
    "save_weights",
    "sha256sum",
    "shipped_checkpoint_dir",
    "tutorial_checkpoint",
    "verify_checkpoint",
]


def __getattr__(name: str):
    """Names of crate_edu 0.1 that moved answer with their new home (crate_edu.renamed)."""
    renamed_name(__name__, name)
