"""crate_edu.train.config: the checks of a run configuration, one line each."""

from __future__ import annotations

import pytest

from crate_edu.train import ConfigError, TrainConfig, check_config
from tests.unit.train.test_loop import tiny_config


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(model="nope"), "unknown model 'nope'"),
        (dict(model="crate_mae_tiny"), "masked autoencoder"),
        (dict(dataset="mnist"), "unknown dataset 'mnist'"),
        (dict(optimizer="adam"), "did you mean adamw"),
        (dict(epochs=-1), "epochs must be a positive integer"),
        (dict(epochs=0), "epochs must be a positive integer"),
        (dict(batch_size=0), "batch-size must be a positive integer"),
        (dict(lr=0.0), "lr must be positive"),
        (dict(label_smoothing=1.0), "label-smoothing"),
        (dict(warmup_epochs=10), "warmup-epochs"),
        (dict(augment="mixup"), "unknown augmentation policy"),
        (dict(model_overrides={"patch_size": 5}), "crate_nano_cifar"),
        (dict(model_overrides={"colour": 1}), "no option"),
        (dict(decay_mask="bias"), "unknown weight-decay mask 'bias'"),
        (dict(smoothing_style="timm"), "unknown label-smoothing style"),
        (dict(min_lr=1.0), "min-lr must be in"),
        (dict(min_lr=1e-6, min_lr_ratio=0.1), "min-lr must be in"),
        (dict(mixup_alpha=-1.0), "mixup-alpha"),
        (dict(mix_switch_prob=2.0), "mix-switch-prob"),
        (dict(randaugment_magnitude=12, augment="imagenet-randaugment"), "randaugment-magnitude"),
        (dict(randaugment_magnitude=float("nan")), "finite"),
        (dict(resample_pretrained="yes"), "resample-pretrained"),
    ],
)
def test_bad_configurations_are_one_line_errors(changes: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        check_config(tiny_config(**changes))
    assert "\n" not in str(info.value)


def test_a_configuration_round_trips_through_json_values() -> None:
    cfg = tiny_config(betas=(0.9, 0.95))
    d = cfg.to_dict()
    assert d["betas"] == [0.9, 0.95]
    assert TrainConfig.from_dict({**d, "from_a_newer_version": 1}) == cfg
