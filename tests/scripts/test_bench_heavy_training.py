"""scripts/bench_heavy_training.py on a small Heavy model: both paths timed on the same sampled ROIs."""

import json


def test_benchmark_times_one_and_two_res5_passes(load_script, capsys):
    bench = load_script("bench_heavy_training")
    small = ["--backbone", "resnet18", "--size", "96", "--rois", "64", "--positives", "16", "--repeats", "1"]
    bench.main([*small, "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["sampled_rois"] == 64 and 0 < result["positives"] <= 16
    assert result["ms_one_pass"] > 0 and result["ms_two_pass"] > 0
    assert result["ratio_one_to_two_pass"] == round(result["ms_one_pass"] / result["ms_two_pass"], 3)
