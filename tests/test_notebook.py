"""notebooks/quickstart.ipynb runs from top to bottom in a real Jupyter kernel against the dev stack (so it
cannot rot), shows progress bars by default, and is kept in the repository without outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def test_the_notebook_in_the_repository_has_no_outputs() -> None:
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "no code cells"
    for c in code:
        assert c["outputs"] == [] and c["execution_count"] is None, "".join(c["source"])[:80]


def _outputs(cell: Any) -> list[Any]:
    return list(cell.get("outputs", []))


# The default topics and consumer groups of the dev stack are this test's alone.
@pytest.mark.timeout(600)
def test_quickstart_runs_top_to_bottom(stack: Any, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", stack.bootstrap_servers)
    monkeypatch.setenv("DATABASE_URL", db)  # a fresh database: the notebook's rows only
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error

    cells = {"".join(c["source"]).splitlines()[0]: c for c in nb.cells if c["cell_type"] == "code"}
    for source, cell in cells.items():
        for out in _outputs(cell):
            assert out["output_type"] != "error", source
            if out["output_type"] == "stream":
                assert out["name"] == "stdout", f"{source}: {out['text'][:500]}"
    # Long calls show a progress bar by default, ending "done".
    produce = _outputs(cells["ecomlogs.produce(20_000, seed=42)"])
    bars = [o for o in produce if "ecomlogs-progress" in o.get("data", {}).get("text/html", "")]
    assert bars, produce
    assert "produce: 20,000 of 20,000 events produced" in bars[-1]["data"]["text/plain"]
    assert bars[-1]["data"]["text/plain"].endswith("- done")
    load_text = json.dumps(_outputs(cells["ecomlogs.load(until_caught_up=True)"]))
    assert "events loaded" in load_text and "rows_inserted=" in load_text
    # The DataFrames and the plots are there.
    assert "text/html" in _outputs(cells["analytics.daily_funnel()"])[0]["data"]
    for plot in ("analytics.plot_funnel()", "analytics.plot_revenue()"):
        assert [o for o in _outputs(cells[plot]) if "image/png" in o.get("data", {})], plot
    reasons = json.dumps(_outputs(cells['dead = analytics.dead_letter_frame()']))
    assert "processor" in reasons and "missing_currency" in reasons
