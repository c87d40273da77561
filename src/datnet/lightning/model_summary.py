"""The model summary at the start of a fit, without FLOPs that were never counted.

Lightning counts a summary's FLOPs only by running the module on its ``example_input_array``; the
``DATNetModule`` has none (a detector's arithmetic depends on the image size and on how many proposals and
detections it gets), so Lightning's ``RichModelSummary`` prints a ``FLOPs`` column of zeros and
``Total FLOPs: 0`` at every run. This summary leaves FLOPs out when none were counted and is Lightning's
otherwise. The arithmetic per component at a given image size: ``scripts/paper/model_report.py --flops``.
"""

from typing import Any

from pytorch_lightning.callbacks import RichModelSummary
from pytorch_lightning.utilities.model_summary.model_summary import (
    get_formatted_model_size,
    get_human_readable_count,
)
from rich import get_console
from rich.table import Table

FLOPS_COLUMN = "FLOPs"


class ParameterSummary(RichModelSummary):
    """``RichModelSummary`` (layers to ``max_depth``, parameter totals, train/eval modes) that shows FLOPs
    only when they were counted (``total_flops`` > 0), never a 0 that means "not counted"."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        """Lightning's Rich table and totals, without the FLOPs column and total when ``total_flops`` is 0."""
        if total_flops:
            RichModelSummary.summarize(
                summary_data,
                total_parameters,
                trainable_parameters,
                model_size,
                total_training_modes,
                total_flops,
                **summarize_kwargs,
            )
            return
        columns = [(name, values) for name, values in summary_data if name != FLOPS_COLUMN]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:
            right = name in ("Params", "Params per Device", "In sizes", "Out sizes")
            table.add_column(name, justify="right" if right else "left", style="dim" if name == " " else None)
        for row in zip(*(values for _, values in columns)):
            table.add_row(*row)
        frozen = total_parameters - trainable_parameters
        totals = Table.grid(expand=True)
        totals.add_column()
        for label, value in (
            ("Trainable params", get_human_readable_count(int(trainable_parameters))),
            ("Non-trainable params", get_human_readable_count(int(frozen))),
            ("Total params", get_human_readable_count(int(total_parameters))),
            ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
            ("Modules in train mode", str(total_training_modes["train"])),
            ("Modules in eval mode", str(total_training_modes["eval"])),
        ):
            totals.add_row(f"[bold]{label}[/]: {value}")
        console = get_console()
        console.print(table)
        console.print(totals)
