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


def interval_panels(metrics: list[str], series: list[dict], xs: list[float], xticklabels: list[str], xlabel: str,
                    title: str, log_base: float = 10, refs: list[dict] | None = None) -> str:
    """One panel per metric: each series' means against ``xs`` with their interval as
    error bars (``series``: ``{"label", "points": {metric: [(x, {"mean", "lo", "hi"}), ...]}``
    plus matplotlib style keys), ``refs`` as horizontal lines (``{"label", "values":
    {metric: y}, "ls"}``); a base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for s in series:
            pts = [(x, ci) for x, ci in s["points"].get(m, []) if ci.get("mean") is not None]
            if pts:
                y = [ci["mean"] for _, ci in pts]
                err = [[ci["mean"] - ci["lo"] for _, ci in pts], [ci["hi"] - ci["mean"] for _, ci in pts]]
                style = {k: v for k, v in s.items() if k not in ("label", "points")}
                ax.errorbar([x for x, _ in pts], y, yerr=err, capsize=3, label=s["label"], **style)
        for r in refs or []:
            if r["values"].get(m) is not None:
                ax.axhline(r["values"][m], color="gray", ls=r.get("ls", ":"), lw=1, label=r["label"])
        ax.set_xscale("log", base=log_base)
        ax.set_xticks(xs, xticklabels)
        ax.set_xlabel(xlabel)
        ax.set_title(m)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return png(fig)
