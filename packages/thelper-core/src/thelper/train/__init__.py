"""The generic training loop."""

from thelper.train.trainer import Trainer

__all__ = ["Trainer"]
