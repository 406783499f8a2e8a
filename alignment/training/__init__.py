"""Training entry points: reward model, SFT, DPO, KTO and online RL (GRPO / RLOO), each a
thin layer over TRL 1.16's trainer and config dataclass. :func:`alignment.training.run.train`
is the one path they share: export -> model -> trainer -> adapter -> registry. The kinds
themselves are one table, :mod:`alignment.training_kinds`.

    assistant train reward --steps 100
    assistant train dpo --epochs 1
    assistant train rl --algo grpo --reward v3
"""

from alignment.training.config import TRAIN_KINDS, config_class, make_config
from alignment.training.run import TrainResult, train

__all__ = ["TRAIN_KINDS", "config_class", "TrainResult", "make_config", "train"]
