"""scripts/bench/bench_records_memory.py on a small record list: one JSON line with both storages measured."""

import json


def test_memory_benchmark_reports_both_storages(load_script, capsys, monkeypatch):
    bench = load_script("bench/bench_records_memory")
    monkeypatch.setattr("sys.argv", ["bench", "--images", "2000", "--workers", "1", "--json"])
    bench.main()
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["images"] == 2000 and result["workers"] == 1 and result["serialized_mib"] > 0
    assert result["worker_private_mib_list"] > 0 and result["worker_private_mib_serialized"] > 0
