"""Pictures a person can read (issue 21): captions scaled to the image, in a contrasting colour on their
instance's colour, never on top of each other; figures with titled panels and a legend of class colours."""

import numpy as np
import torch

from datnet.visualization import classes_legend, draw_instances, figure
from datnet.visualization.captions import font_size_for, overlaps, place_caption, text_color
from datnet.visualization.layout import BAR_COLOR, bar_height


def test_captions_of_overlapping_boxes_do_not_overlap() -> None:
    taken = []
    for _ in range(4):  # four detections of the same object: the same box
        taken.append(place_caption((40, 40, 120, 120), (60, 14), (200, 200), taken))
    assert all(not overlaps(a, b) for i, a in enumerate(taken) for b in taken[i + 1 :])
    assert all(0 <= x1 and x2 <= 200 and 0 <= y1 and y2 <= 200 for x1, y1, x2, y2 in taken)


def test_caption_text_contrasts_with_its_box() -> None:
    assert text_color((30, 60, 230)) == (255, 255, 255)  # white on blue
    assert text_color((255, 230, 40)) == (0, 0, 0)  # black on yellow


def test_caption_size_follows_the_image() -> None:
    assert font_size_for(128, 128) == 11 and font_size_for(800, 1333) == 25


def test_two_captions_on_one_box_are_both_drawn() -> None:
    """The second caption of a box goes elsewhere, so two distinct caption boxes of the colours appear."""
    image = torch.zeros(3, 200, 300, dtype=torch.uint8)
    boxes = torch.tensor([[50.0, 60.0, 150.0, 160.0], [52.0, 61.0, 149.0, 158.0]])
    colors = [(0, 0, 0), (250, 40, 40), (40, 40, 250)]
    drawn = draw_instances(image, boxes, [1, 2], ["pedestrian", "pedestrian"], colors, None).numpy()
    for color in colors[1:]:
        filled = (drawn == np.array(color).reshape(3, 1, 1)).all(axis=0)
        rows = np.nonzero(filled.sum(axis=1) > 30)[0]  # a caption box: long rows of its colour
        assert len(rows) >= 8, color


def test_figure_has_a_title_bar_per_panel_and_a_legend() -> None:
    panels = [(title, torch.full((3, 96, 128), 200, dtype=torch.uint8)) for title in ("image", "DT target")]
    names, colors = ["__background__", "circle", "square"], [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    legend = classes_legend([2, 1, 2], names, colors)
    assert list(legend) == ["circle", "square"]
    picture = figure(panels, legend).permute(1, 2, 0).numpy()
    bar = bar_height(128)
    assert picture.shape == (96 + 2 * bar, 256, 3)
    title, legend_bar = picture[:bar], picture[-bar:]
    assert (title == BAR_COLOR).all(axis=2).mean() > 0.5 and (title == 255).all(axis=2).any()  # white text
    for color in colors[1:]:
        assert (legend_bar == color).all(axis=2).sum() > 20, color
    assert (picture[bar:-bar] == 200).all()
