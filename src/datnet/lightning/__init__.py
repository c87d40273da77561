"""What Lightning calls during fit, validate and test: the LightningModule, its callbacks and the schedule.

Imports ``datnet.models``, ``datnet.data`` and ``datnet.evaluation``; never ``datnet.runs`` (which builds the
Trainer around these).
"""

from datnet.lightning.module import DATNetModule
from datnet.lightning.schedule import Recipe, scale_recipe

__all__ = ["DATNetModule", "Recipe", "scale_recipe"]
