"""Small pure markdown and text helpers of the report: tables, escaping, signed numbers,
seed lists, mean ± std cells.

They exist apart so that every section module formats numbers the same way, without
depending on the runs or on each other.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from ..evaluation.metrics import format_mean_std


def md_table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else ":---:" if a == "c" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*").replace("_", "\\_").replace("\n", " ")


def signed(x: float) -> str:
    return f"{x:+.2f}"


def seeds_text(runs: Sequence[dict[str, Any]]) -> str:
    seeds = sorted(r["seed"] for r in runs)
    if not seeds:
        return "none"
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def ms_text(values: Sequence[float]) -> str:
    return format_mean_std(values) if values else "—"
