"""scripts/bench/bench_eval.py on 50 simulated images: the three evaluation paths measured, with the same
metrics."""

import json


def test_eval_benchmark_reports_both_paths(load_script, capsys, monkeypatch):
    bench = load_script("bench/bench_eval")
    monkeypatch.setattr("sys.argv", ["bench", "--images", "50", "--json"])
    bench.main()
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["images"] == 50 and result["ranks"] == 2 and result["same_metrics"]
    assert 0 < result["bbox_AP"] < 1
    for path in ("rank0", "mid_run", "all_gather"):
        fields = ("peak_rss_mb_rank0", "peak_rss_mb_other", "seconds", "compute_seconds")
        assert all(result[path][field] > 0 for field in fields), result[path]
