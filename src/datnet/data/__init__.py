"""Data: sources (COCO, VOC, Penn-Fudan, VOC instance PNGs, embedded shapes), augmentation, the dense
auxiliary targets of paper Sec. 3.1, samplers and Lightning data modules."""

from datnet.data.datamodule import (
    CocoDataModule,
    DetectionDataModule,
    PennFudanDataModule,
    ShapesDataModule,
    VocDataModule,
    VocInstSegDataModule,
)
from datnet.data.dataset import DetectionDataset, SkippedSample, collate

__all__ = [
    "CocoDataModule",
    "DetectionDataModule",
    "DetectionDataset",
    "PennFudanDataModule",
    "ShapesDataModule",
    "SkippedSample",
    "VocDataModule",
    "VocInstSegDataModule",
    "collate",
]
