"""FLOPs: ``scripts/paper/model_report.py --flops`` per component of any configured model, and the run's
model summary, which shows FLOPs only when they were counted."""

import contextlib
import io
import json
from types import SimpleNamespace

import pytest
import torch
from pytorch_lightning import LightningModule
from torch import nn

from datnet.lightning.model_summary import ParameterSummary

SMALL = ["--size", "64", "--candidates", "50", "model.detector.rpn_post_nms_top_n_test=20"]


def flops_report(load_script, *overrides: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        load_script("paper/model_report").main(["--flops", "--json", *SMALL, *overrides])
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 1, out.getvalue()
    return json.loads(lines[0])


@pytest.mark.parametrize("model", ["light", "maskrcnn"])
def test_components_add_up_and_aux_heads_are_counted(load_script, model):
    """The demo's ResNet-18 at 64 px: every component with parameters computes something (the auxiliary
    heads are a ModuleDict that never runs itself), and parameters and FLOPs add up to the totals."""
    report = flops_report(load_script, "experiment=demo", f"model={model}")
    components = report["components"]
    assert list(components) == ["backbone", "aux heads", "fusion", "RPN", "ROI heads", "other", "total"]
    assert min(report["resized"]) in (63, 64)  # the short side at --size (the resize floors: maybe 1 less)
    for name in ("backbone", "RPN", "ROI heads"):
        assert components[name]["params"] > 0 and components[name]["gflops"] > 0, name
    aux = components["aux heads"]
    if model == "light":
        assert aux["params"] > 0 and aux["gflops"] > 0
    else:
        assert aux == {"params": 0, "gflops": 0}
    parts = [row for name, row in components.items() if name != "total"]
    assert sum(row["params"] for row in parts) == components["total"]["params"]
    assert components["other"]["params"] == 0
    assert sum(row["gflops"] for row in parts) == pytest.approx(components["total"]["gflops"])


def test_overrides_need_flops(load_script, capsys):
    with pytest.raises(SystemExit):
        load_script("paper/model_report").main(["model=heavy"])
    assert "Hydra overrides are for --flops" in capsys.readouterr().err


class Linear(LightningModule):
    def __init__(self, example: torch.Tensor | None) -> None:
        super().__init__()
        self.layer = nn.Linear(8, 4)
        self.example_input_array = example

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def test_summary_shows_flops_only_when_counted(capsys):
    """Without an example input (the DATNetModule) Lightning counts nothing and its summary says
    ``Total FLOPs: 0``; ours leaves FLOPs out. With one, they are Lightning's: 2 x 8 x 4 x 2 = 128."""
    trainer = SimpleNamespace(strategy=None, is_global_zero=True)
    ParameterSummary(max_depth=1).on_fit_start(trainer, Linear(None))
    out = capsys.readouterr().out
    assert "Total params" in out and "layer" in out and "FLOPs" not in out
    ParameterSummary(max_depth=1).on_fit_start(trainer, Linear(torch.zeros(2, 8)))
    assert "Total FLOPs: 128" in capsys.readouterr().out
