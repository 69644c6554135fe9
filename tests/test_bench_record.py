"""bench/record.py: BENCHMARKS.md holds one section per benchmark that ran, replaced when it
runs again, sorted by name, each with its command, date and machine."""
from __future__ import annotations

import sys
import types

from bench import record as R


def test_a_rerun_replaces_its_own_section_and_sections_stay_sorted(tmp_path):
    document = tmp_path / "BENCHMARKS.md"
    R.record("score_bench", {"factorized / plain": 1.91234, "factorized pairs/s": 2.4e6,
                             "pairs": 1200}, command="python -m bench.score_bench",
             document=document)
    R.record("build_features_bench", [("spark / pandas", 0.5), ("a | b", None), ("ok", True)],
             command="python -m bench.build_features_bench --scale tiny", document=document)
    first = R.sections(document.read_text())["score_bench"]
    assert "| factorized / plain | 1.91 |" in first and "| pairs | 1,200 |" in first
    assert "| factorized pairs/s | 2,400,000 |" in first
    R.record("score_bench", {"factorized / plain": 2.0},
             command="python -m bench.score_bench --users 10", document=document)
    text = document.read_text()
    assert text.startswith(R.HEADER)
    assert list(R.sections(text)) == ["build_features_bench", "score_bench"]
    score = R.sections(text)["score_bench"]
    assert "`python -m bench.score_bench --users 10`" in score
    assert "| factorized / plain | 2 |" in score and "pairs" not in score
    assert "| a \\| b | - |" in text and "| ok | True |" in text
    assert " UTC on " in score and " cores, " in score and " GiB memory, " in score


def test_the_command_is_the_module_with_paths_in_the_checkout_made_relative(monkeypatch):
    main = types.ModuleType("__main__")
    main.__spec__ = types.SimpleNamespace(name="bench.score_bench")
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", [str(R.ROOT / "bench" / "score_bench.py"), "--out",
                                      str(R.ROOT / "bench" / "data" / "x"), "a b"])
    assert R.command_line() == "python -m bench.score_bench --out bench/data/x 'a b'"


def test_commands_name_no_path_of_this_machine():
    from bench.record import ROOT, _portable

    assert _portable(f"{ROOT}/bench/data/tiny") == "bench/data/tiny"
    assert _portable("/home/someone/mind/news.tsv") == "DATA/news.tsv"
    assert _portable("--rows") == "--rows"
