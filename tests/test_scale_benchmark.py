import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "scale.py"


def test_scale_benchmark_quick_mode_runs_and_reports(tmp_path):
    """`benchmarks/scale.py --quick` (the script the 10⁶-particle and GPU runs use, at N = 16384): both cases run in
    their own processes and the section reports particle-steps/s and peak memory for each."""
    out = tmp_path / "results.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--output", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert "## A million particles (quick)" in text and "failed" not in text
    rows = [line for line in text.splitlines() if line.startswith("| mfpde") or line.startswith("| hand-written")]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[2]) > 0 and cells[5].endswith("GiB")
