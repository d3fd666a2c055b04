"""Where the tests find the repository, its notebooks and the committed fixtures."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
NOTEBOOKS = ROOT / "notebooks"
BENCHMARK_RESULTS = ROOT / "benchmarks" / "results"
