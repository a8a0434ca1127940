"""The committed experiments/RESULTS.md is exactly what the renderer makes of the committed results files."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_committed_results_md_equals_the_renderers_output() -> None:
    from experiments.render import render

    committed = (ROOT / "experiments" / "RESULTS.md").read_bytes().decode("utf-8")
    rendered = render(ROOT / "experiments" / "results")
    if committed != rendered:
        a, b = committed.splitlines(), rendered.splitlines()
        i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        raise AssertionError(
            f"experiments/RESULTS.md differs from the render of experiments/results/*.json from line {i + 1}:\n"
            f"committed: {a[i] if i < len(a) else '<end of file>'}\nrendered:  {b[i] if i < len(b) else '<end of file>'}\n"
            "rerun `python -m experiments.bench --render-only` and commit the result")
    assert committed.encode("utf-8") == rendered.encode("utf-8")  # byte for byte (line endings included)
