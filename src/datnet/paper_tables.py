"""Numbers reported in the paper, used as targets by reports and tests."""

# Table 7: (model preset, backbone) -> (ms per image on a P100, parameters in millions).
TABLE7 = {
    ("maskrcnn", "resnet50"): (91, 44.4),
    ("light", "resnet50"): (220, 62.3),
    ("heavy", "resnet50"): (391, 59.9),
    ("maskrcnn", "resnext101_32x8d"): (219, 107.4),
    ("light", "resnext101_32x8d"): (414, 139.2),
    ("heavy", "resnext101_32x8d"): (594, 136.8),
}
