"""scripts/bench/bench_heavy_training.py on a small Heavy model: both paths timed on the same sampled ROIs."""

import json


def test_benchmark_times_one_and_two_res5_passes(load_script, capsys):
    bench = load_script("bench/bench_heavy_training")
    small = ["--backbone", "resnet18", "--size", "96", "--rois", "64", "--positives", "16", "--repeats", "1"]
    bench.main([*small, "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["sampled_rois"] == 64 and 0 < result["positives"] <= 16
    assert result["ms_one_pass"] > 0 and result["ms_two_pass"] > 0
    assert result["ratio_one_to_two_pass"] == round(result["ms_one_pass"] / result["ms_two_pass"], 3)


def test_training_step_of_the_image_resolution_aux_loss(load_script, capsys):
    """--steps: a variant's whole training step (Light, aux loss at stride 1) in its own process, with its
    time, its ratio to the first variant's and its peak memory (one variant: each costs a process)."""
    bench = load_script("bench/bench_heavy_training")
    small = ["--backbone", "resnet18", "--channels", "32", "--height", "64", "--width", "96", "--rois", "16"]
    bench.main(["--steps", *small, "--objects", "2", "--repeats", "1", "--variants", "light:1", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["image"] == [64, 96] and result["backbone"] == "resnet18"
    (row,) = result["variants"]
    assert row["variant"] == "light:1" and row["ratio"] == 1.0 and row["ms_per_step"] > 0
    assert row["peak_rss_mb"] >= row["step_peak_mb"] >= 0
