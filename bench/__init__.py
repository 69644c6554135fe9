"""The benchmarks: run each from the repository root as `python -m bench.NAME [options]`;
each records its figures in BENCHMARKS.md (bench/record.py)."""
