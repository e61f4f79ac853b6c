"""Building blocks every HTML report shares: inline PNG plots and escaped tables.

Catalog and query text is untrusted: every cell goes through ``html.escape``.
"""
from __future__ import annotations

import base64
import html
import io
import math


def png(fig, dpi: int = 110) -> str:
    """A matplotlib figure as base64 PNG (for ``<img src="data:image/png;base64,...">``); closes it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def fmt(v, digits: int = 4) -> str:
    """One table cell: floats rounded, missing values as '-', everything else escaped."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def table(rows: list[dict], cols: list[str], digits: int = 4) -> str:
    """An HTML table of ``rows`` (dicts) over ``cols``, every cell escaped."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{fmt(r.get(c), digits)}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def numerics_line(n: dict | None) -> str:
    """One escaped paragraph naming a run's numeric path (relgrade/numerics.py), so that a
    reader can tell a code change from a machine change."""
    if not n:
        return ""
    prec = ", ".join(f"{k} {v}" for k, v in n.get("precision", {}).items())
    isa = ", ".join(k for k, v in n.get("cpu", {}).get("isa", {}).items() if v) or "none of the listed"
    blas = ", ".join(f"{b.get('internal_api')} {b.get('version')}" for b in n.get("blas", []) if b.get("internal_api"))
    text = (f"Numeric path: device {n.get('device')}; {prec}; CPU {n.get('cpu', {}).get('model')} "
            f"({isa}); torch {n.get('torch', {}).get('version')}, {n.get('torch', {}).get('threads')} threads; "
            f"BLAS {blas or 'unknown'}" + (f"; forced {n['precision_forced']}" if n.get("precision_forced") else ""))
    return f"<p class='numerics'>{html.escape(text)}</p>"
