"""maskrcnn-benchmark's RPN details: the training proposals, the post-NMS top N of the batch
(FPN_POST_NMS_TOP_N_TRAIN), and the anchors crossing the image border left out of the loss
(STRADDLE_THRESH)."""

import pytest
import torch
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead

from datnet.models.mixed_precision import Float32AnchorGenerator, Float32BoxCoder
from datnet.models.rpn import (
    BatchTopNRegionProposalNetwork,
    Float32RegionProposalNetwork,
    straddling,
    top_n_over_batch,
)

from .conftest import SMALL_DETECTOR, small_model


def separate_boxes(n: int) -> torch.Tensor:
    """``n`` disjoint 10x10 boxes in a row (NMS keeps them all)."""
    x = torch.arange(n, dtype=torch.float32) * 20
    return torch.stack([x, torch.zeros(n), x + 10, torch.full((n,), 10.0)], dim=1)


def tiny_rpn_args(head: RPNHead | None = None, post_nms_top_n: int = 20) -> tuple:
    """The arguments of an RPN on one 8-channel level, keeping ``post_nms_top_n`` proposals per image."""
    return (
        AnchorGenerator(((16, 32),), ((0.5, 1.0, 2.0),)),
        head or RPNHead(8, 6),
        0.7,
        0.3,
        64,
        0.5,
        dict(training=200, testing=100),
        dict(training=post_nms_top_n, testing=post_nms_top_n),
        0.7,
    )


def tiny_rpn(
    post_nms_top_n: int, rpn: type[RegionProposalNetwork] = RegionProposalNetwork, head: RPNHead | None = None
) -> RegionProposalNetwork:
    """An ``rpn`` (torchvision's by default) on one 8-channel level, keeping ``post_nms_top_n`` proposals per
    image (the top N of the batch in training for ``BatchTopNRegionProposalNetwork``)."""
    return rpn(*tiny_rpn_args(head, post_nms_top_n))


def test_hand_built_batch_where_per_image_and_per_batch_top_n_differ():
    """Two images, 4 disjoint proposals each, top 3: per image 3 + 3 (torchvision); per batch the 3 best of
    all 8 logits (5, 4, 3): two of the first image, one of the second (maskrcnn-benchmark). At test, per
    image."""
    torchvision_rpn = tiny_rpn(3)
    ours = tiny_rpn(3, BatchTopNRegionProposalNetwork)
    proposals = torch.stack([separate_boxes(4), separate_boxes(4)])
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0], [0.0, -1.0, 5.0, -2.0]])
    args = (proposals, logits, [(20, 100), (20, 100)], [4])
    per_image, _ = torchvision_rpn.train().filter_proposals(*args)
    assert [len(b) for b in per_image] == [3, 3]
    boxes, scores = ours.train().filter_proposals(*args)
    torch.testing.assert_close(scores[0], torch.sigmoid(torch.tensor([4.0, 3.0])))
    torch.testing.assert_close(scores[1], torch.sigmoid(torch.tensor([5.0])))
    torch.testing.assert_close(boxes[0], separate_boxes(4)[:2])
    torch.testing.assert_close(boxes[1], separate_boxes(4)[2:3])
    test_boxes, _ = ours.eval().filter_proposals(*args)
    assert [len(b) for b in test_boxes] == [3, 3]


def test_top_n_over_batch_keeps_everything_when_the_batch_has_at_most_n():
    boxes, scores = [separate_boxes(2), separate_boxes(1)], [torch.tensor([0.3, 0.1]), torch.tensor([0.2])]
    kept_boxes, kept_scores = top_n_over_batch(boxes, scores, 3)
    assert kept_boxes is boxes and kept_scores is scores
    _, kept_scores = top_n_over_batch(boxes, scores, 2)
    assert [s.tolist() for s in kept_scores] == [pytest.approx([0.3]), pytest.approx([0.2])]


def test_config_switch_swaps_the_rpn_and_keeps_the_state_dict_and_settings():
    """``detector.rpn_post_nms_per_batch``: the same weights and settings (float32 geometry included)."""
    torch.manual_seed(0)
    default = small_model("maskrcnn")
    torch.manual_seed(0)
    ours = small_model("maskrcnn", detector={**SMALL_DETECTOR, "rpn_post_nms_per_batch": True})
    assert type(default.rpn) is Float32RegionProposalNetwork
    assert type(ours.rpn) is BatchTopNRegionProposalNetwork
    for rpn in (default.rpn, ours.rpn):
        assert isinstance(rpn.anchor_generator, Float32AnchorGenerator)
        assert isinstance(rpn.box_coder, Float32BoxCoder)
    for key, value in default.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, rtol=0, atol=0)
    for name in ("_pre_nms_top_n", "_post_nms_top_n", "nms_thresh", "score_thresh", "min_size"):
        assert getattr(ours.rpn, name) == getattr(default.rpn, name)
    assert ours.rpn.proposal_matcher.high_threshold == default.rpn.proposal_matcher.high_threshold == 0.7
    assert ours.rpn.fg_bg_sampler.batch_size_per_image == default.rpn.fg_bg_sampler.batch_size_per_image


def test_training_forward_gives_n_proposals_per_batch_and_torchvisions_losses():
    """A one-level RPN on random 16x16 features of two images: torchvision keeps 20 proposals per image,
    ours 20 in all; the losses (which do not depend on the selection) are torchvision's."""
    torch.manual_seed(0)
    torchvision_rpn = tiny_rpn(20)
    ours = tiny_rpn(20, BatchTopNRegionProposalNetwork, head=torchvision_rpn.head)
    images = ImageList(torch.zeros(2, 3, 64, 64), [(64, 64), (64, 64)])
    features = {"0": torch.randn(2, 8, 16, 16)}
    targets = [
        {"boxes": torch.tensor([[4.0, 4.0, 40.0, 30.0]])},
        {"boxes": torch.tensor([[10.0, 8.0, 60.0, 60.0]])},
    ]
    torch.manual_seed(1)  # the same anchors sampled for the loss
    theirs_boxes, theirs_losses = torchvision_rpn.train()(images, features, targets)
    torch.manual_seed(1)
    our_boxes, our_losses = ours.train()(images, features, targets)
    assert [len(b) for b in theirs_boxes] == [20, 20] and sum(len(b) for b in our_boxes) == 20
    for key, value in theirs_losses.items():
        torch.testing.assert_close(our_losses[key], value, rtol=0, atol=0)


def test_detector_settings_are_torchvisions_maskrcnn_defaults():
    """The RPN, ROI heads and transform ``build_datnet`` assembles have the settings torchvision's
    ``MaskRCNN`` gives the same keyword arguments: anchors (FPN's, ``ANCHOR_SIZES``), RPN and ROI sampling,
    NMS, top N, box coder weights, image sizes and normalisation."""
    ours = small_model("maskrcnn")
    theirs = MaskRCNN(ours.backbone, num_classes=5, **SMALL_DETECTOR)
    anchors, stock = ours.rpn.anchor_generator, theirs.rpn.anchor_generator
    assert (anchors.sizes, anchors.aspect_ratios) == (stock.sizes, stock.aspect_ratios)
    for name in ("_pre_nms_top_n", "_post_nms_top_n", "nms_thresh", "score_thresh", "min_size"):
        assert getattr(ours.rpn, name) == getattr(theirs.rpn, name), name
    for name in ("score_thresh", "nms_thresh", "detections_per_img"):
        assert getattr(ours.roi_heads, name) == getattr(theirs.roi_heads, name), name
    for part in ("rpn", "roi_heads"):
        ours_part, theirs_part = getattr(ours, part), getattr(theirs, part)
        assert vars(ours_part.proposal_matcher) == vars(theirs_part.proposal_matcher)
        assert vars(ours_part.fg_bg_sampler) == vars(theirs_part.fg_bg_sampler)
        assert vars(ours_part.box_coder) == vars(theirs_part.box_coder)
    for name in ("min_size", "max_size", "image_mean", "image_std", "size_divisible", "fixed_size"):
        assert getattr(ours.transform, name) == getattr(theirs.transform, name), name


def test_straddling_anchors_are_the_ones_not_inside_the_image():
    """maskrcnn-benchmark's visibility at STRADDLE_THRESH = 0: x1, y1 >= 0 and x2 < W, y2 < H (strictly)."""
    anchors = torch.tensor(
        [
            [0.0, 0.0, 59.9, 49.9],  # inside
            [-0.5, 10.0, 20.0, 20.0],  # left of the image
            [10.0, 10.0, 60.0, 20.0],  # x2 = W
            [10.0, 10.0, 20.0, 50.0],  # y2 = H
            [10.0, -1.0, 20.0, 20.0],  # above
        ]
    )
    assert straddling(anchors, (50, 60), 0).tolist() == [False, True, True, True, True]
    assert straddling(anchors, (50, 60), 0.5).tolist() == [False, False, False, False, True]


def test_straddle_thresh_ignores_the_anchors_crossing_the_image_border_in_the_loss():
    """With ``straddle_thresh=0`` the RPN labels are torchvision's except that every anchor crossing the
    (unpadded) image is -1; the loss changes; the default (-1) is torchvision's RPN."""
    torch.manual_seed(0)
    torchvision_rpn = tiny_rpn(20)
    ours = Float32RegionProposalNetwork(*tiny_rpn_args(torchvision_rpn.head), straddle_thresh=0)
    default = Float32RegionProposalNetwork(*tiny_rpn_args(torchvision_rpn.head))
    images = ImageList(torch.zeros(1, 3, 64, 64), [(48, 56)])  # padded to 64 x 64
    features = {"0": torch.randn(1, 8, 16, 16)}
    targets = [{"boxes": torch.tensor([[0.0, 2.0, 30.0, 40.0]])}]  # on the left border
    seen = {}
    for name, rpn in (("torchvision", torchvision_rpn), ("ours", ours), ("default", default)):
        assign = rpn.assign_targets_to_anchors

        def record(anchors, targets, assign=assign, name=name):
            labels, matched = assign(anchors, targets)
            seen[name] = (anchors[0], labels[0].clone())
            return labels, matched

        rpn.assign_targets_to_anchors = record
        torch.manual_seed(1)
        seen[f"{name} losses"] = rpn.train()(images, features, targets)[1]
    anchors, expected = seen["torchvision"]
    outside = straddling(anchors, (48, 56), 0)
    assert (expected[outside] == 1).any() and (expected[outside] == 0).any()  # they did count
    torch.testing.assert_close(seen["ours"][1], torch.where(outside, -1.0, expected), rtol=0, atol=0)
    torch.testing.assert_close(seen["default"][1], expected, rtol=0, atol=0)
    for key, value in seen["torchvision losses"].items():
        torch.testing.assert_close(seen["default losses"][key], value, rtol=0, atol=0)
    assert seen["ours losses"]["loss_objectness"] != seen["torchvision losses"]["loss_objectness"]


def test_config_straddle_thresh_reaches_the_rpn():
    default = small_model("maskrcnn").rpn
    ours = small_model("maskrcnn", detector={**SMALL_DETECTOR, "rpn_straddle_thresh": 0}).rpn
    assert (default.straddle_thresh, ours.straddle_thresh) == (-1, 0)
    per_batch = small_model(
        "maskrcnn", detector={**SMALL_DETECTOR, "rpn_straddle_thresh": 0, "rpn_post_nms_per_batch": True}
    ).rpn
    assert type(per_batch) is BatchTopNRegionProposalNetwork and per_batch.straddle_thresh == 0
