"""notebooks/quickstart.ipynb runs from top to bottom in a real Jupyter kernel against a real broker and the dev
stack's PostgreSQL (so it cannot rot), shows progress bars by default, and is kept in the repository without
outputs."""

from __future__ import annotations

import json
import re
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


# The notebook uses the default topics and consumer groups, as a user would: on a broker of the test's own, so
# that its events never reach the dev stack's topics (where `./dev pipeline` would load them later).
@pytest.mark.timeout(600)
def test_quickstart_runs_top_to_bottom(memory_broker: Any, db: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    import psycopg2
    from nbclient import NotebookClient

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", memory_broker.bootstrap_servers)
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
    # Exactly the notebook's own events: what the processor passed is what the table holds, once each.
    inserted = int(re.findall(r"rows_inserted=(\d+)", load_text)[-1])
    reasons = json.dumps(_outputs(cells["processed = ecomlogs.process(until_caught_up=True)"]))
    invalid = sum(int(n) for n in re.findall(r"'[a-z_]+': (\d+)", reasons))
    assert inserted + invalid == 20_000 and invalid > 0, (inserted, reasons)
    with psycopg2.connect(db) as conn, conn.cursor() as c:
        c.execute("SELECT count(*), count(DISTINCT event_id) FROM kafka_events_silver")
        assert c.fetchone() == (inserted, inserted)
    # The DataFrames and the plots are there.
    assert "text/html" in _outputs(cells["analytics.daily_funnel()"])[0]["data"]
    for plot in ("analytics.plot_funnel()", "analytics.plot_revenue()"):
        assert [o for o in _outputs(cells[plot]) if "image/png" in o.get("data", {})], plot
    reasons = json.dumps(_outputs(cells['dead = analytics.dead_letter_frame()']))
    assert "processor" in reasons and "missing_currency" in reasons
