"""``bench ped2`` report presentation: a Markdown table and a rich console table of the AUCs."""

from __future__ import annotations

from typing import Any, Mapping


def _f(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def format_table(report: Mapping[str, Any]) -> str:
    """Plain-text (Markdown) table of the report's AUCs."""
    rows = [
        "| model | P,Q | CV video AUC | offline AUC (all) | streamed AUC (all) | offline AUC (anomalous videos) "
        "| streamed AUC (anomalous videos) | max \\|stream−offline\\| |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, r in report["results"].items():
        ch = report["selection"]["chosen"].get(k, {})
        pq = ",".join(map(str, ch["pq"])) if ch.get("pq") else "—"
        st = r.get("streamed", {})
        ag = report["agreement"].get(k)
        star = " *" if k == report["primary"] else ""
        rows.append(
            f"| {k}{star} | {pq} | {_f(ch.get('video_auc'))} | {_f(r['offline']['all'])} | "
            f"{_f(st.get('all'))} | {_f(r['offline']['anomalous'])} | {_f(st.get('anomalous'))} | "
            f"{'—' if ag is None else format(ag['max_abs_diff'], '.2e')} |"
        )
    return "\n".join(rows)


def print_report(report: Mapping[str, Any], console=None) -> None:
    """Print the report's AUC table, timings and the streamed-vs-offline verdict (rich)."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=max(console.width, 120))
    t = Table(title="UCSD Ped2 — frame-level ROC-AUC (causal clip scores)")
    for c in (
        "model",
        "P,Q",
        "CV video AUC",
        "offline all",
        "streamed all",
        "offline anom.",
        "streamed anom.",
        "max |Δ|",
    ):
        t.add_column(
            c, justify="right" if c != "model" else "left", no_wrap=True, min_width=15 if c == "model" else None
        )
    for k, r in report["results"].items():
        ch = report["selection"]["chosen"].get(k, {})
        st = r.get("streamed", {})
        ag = report["agreement"].get(k)
        t.add_row(
            k + (" *" if k == report["primary"] else ""),
            ",".join(map(str, ch["pq"])) if ch.get("pq") else "—",
            _f(ch.get("video_auc")),
            _f(r["offline"]["all"]),
            _f(st.get("all")),
            _f(r["offline"]["anomalous"]),
            _f(st.get("anomalous")),
            "—" if ag is None else f"{ag['max_abs_diff']:.1e}",
        )
    console.print(t)
    tm = report["timings"]
    console.print(
        "* = written to " + report["out_model"] + "  |  anom. = videos containing anomalies "
        "(Ped2: test_*)  |  " + ", ".join(f"{k} {v:.1f}" for k, v in tm.items())
    )
    if report.get("agreement_ok") is not None:
        ok = report["agreement_ok"]
        console.print(
            f"streamed vs offline: {'[green]agree' if ok else '[red]DISAGREE'}[/] "
            f"(tolerance {report['agreement_tol']:g}, {report['stream'].get('videos')} videos, "
            f"{report['stream'].get('transport')})"
        )
