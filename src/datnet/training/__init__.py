"""Lightning training and evaluation of DATNet."""

from datnet.training.module import DATNetModule
from datnet.training.recipe import Recipe, scale_recipe

__all__ = ["DATNetModule", "Recipe", "scale_recipe"]
