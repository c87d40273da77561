"""Pictures of what the model sees and says: detections and instances (``instances``, with readable
``captions``), the dense auxiliary maps and targets of Sec. 3.1 (``dense_maps``), and figures of titled
panels with a legend of class colours (``layout``); for predict.py, browse_dataset.py, the notebook and the
loggers."""

from datnet.visualization.dense_maps import (
    DT_GREY_MAX,
    DT_TARGET_BINS,
    IGNORE_COLOR,
    aux_panels,
    dense_target_image,
    dt_image,
    resize_panel,
    semantic_image,
    target_panels,
)
from datnet.visualization.instances import (
    class_colors,
    draw_detections,
    draw_instances,
    draw_targets,
    to_uint8_image,
)
from datnet.visualization.layout import classes_legend, figure

__all__ = [
    "DT_GREY_MAX",
    "DT_TARGET_BINS",
    "IGNORE_COLOR",
    "aux_panels",
    "class_colors",
    "classes_legend",
    "dense_target_image",
    "draw_detections",
    "draw_instances",
    "draw_targets",
    "dt_image",
    "figure",
    "resize_panel",
    "semantic_image",
    "target_panels",
    "to_uint8_image",
]
