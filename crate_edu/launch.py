"""What a command line that starts ``crate-edu train`` runs: how many processes, and which configuration.

The README and notebook 06 give command lines such as::

    crate-edu train --recipe imagenet --dataset imagenet-100 --grad-accum 8
    torchrun --standalone --nproc_per_node 8 -m crate_edu train --recipe imagenet
    accelerate launch --multi_gpu --num_processes 4 -m crate_edu train --recipe imagenette

:func:`read_launch_command` reads one without running anything: the words from ``train`` on go
through the ``crate-edu`` parser itself (a flag it does not know is refused, as the command would
refuse it), the flags become the :class:`~crate_edu.train.TrainConfig` that ``crate-edu train``
builds from them (recipe defaults, then each flag given), checked by
:func:`~crate_edu.train.check_config`; the launcher's words before ``train`` give the number of
processes. Checks that need files (the data, ``--pretrained`` weights, a run to ``--resume``) are
left to the run itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import shlex
from collections.abc import Sequence

from crate_edu.cli import build_parser, train_settings
from crate_edu.errors import ConfigError
from crate_edu.train import TrainConfig, check_config

__all__ = ["LaunchCommand", "read_launch_command"]


@dataclasses.dataclass(frozen=True)
class LaunchCommand:
    """A launch command, read: ``processes`` processes, each running ``config`` (its global batch).

    Attributes:
        processes: processes the launcher starts (``accelerate launch --num_processes``,
            ``torchrun --nnodes x --nproc_per_node``); 1 without a launcher.
        config: the configuration ``crate-edu train`` builds from the command's flags.
    """

    processes: int
    config: TrainConfig

    @property
    def images_per_pass(self) -> int:
        """Images in one forward pass of one process: batch_size / (processes x grad_accum)."""
        return self.config.batch_size // (self.processes * self.config.grad_accum)


def read_launch_command(command: str | Sequence[str]) -> LaunchCommand:
    """Read a shell command line that runs ``crate-edu train`` (directly or through a launcher).

    Args:
        command: the command as typed (split like a POSIX shell) or as a list of words; the
            first word ``train`` starts the ``crate-edu`` arguments.

    Raises:
        ConfigError: no ``train`` in the command, a flag or value ``crate-edu train`` refuses, or a
            process count that is not a whole number; one line saying which.
    """
    words = shlex.split(command) if isinstance(command, str) else list(command)
    if "train" not in words:
        raise ConfigError(f"{' '.join(words)!r} does not run `crate-edu train` (no word 'train')")
    at = words.index("train")
    return LaunchCommand(processes=_processes(words[:at]), config=_train_config(words[at:]))


def _train_config(arguments: list[str]) -> TrainConfig:
    """The TrainConfig of ``crate-edu train ...`` (``arguments`` start with 'train')."""
    refused = io.StringIO()
    try:
        with contextlib.redirect_stderr(refused):  # argparse prints its one line, then exits
            given = vars(build_parser().parse_args(arguments))
    except SystemExit:
        raise ConfigError(refused.getvalue().strip() or f"{' '.join(arguments)!r} is not a run") from None
    recipe, overrides, _ = train_settings(given)  # exactly as `crate-edu train` reads its flags
    return check_config(recipe.config(**overrides))


def _option(words: list[str], *names: str) -> str | None:
    """The value of the first of ``names`` in ``words`` (``--name VALUE`` or ``--name=VALUE``)."""
    for i, word in enumerate(words):
        for name in names:
            if word == name and i + 1 < len(words):
                return words[i + 1]
            if word.startswith(name + "="):
                return word[len(name) + 1 :]
    return None


def _count(value: str | None, option: str) -> int:
    if value is None:
        return 1
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{option} {value!r}: give the number of processes as a positive whole number")
    return int(value)


def _processes(launcher: list[str]) -> int:
    """Processes started by the launcher words before 'train' (1 without a launcher)."""
    total = _option(launcher, "--num_processes", "--num-processes")  # accelerate: over all machines
    if total is not None:
        return _count(total, "--num_processes")
    per_node = _count(_option(launcher, "--nproc_per_node", "--nproc-per-node"), "--nproc_per_node")
    return _count(_option(launcher, "--nnodes"), "--nnodes") * per_node  # torchrun
