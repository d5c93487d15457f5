"""Regenerate the paper's analysis (Tables 1-5, Figure 3) with one command.

* :mod:`.plan`    which trainings the analysis needs (deduplicated run keys);
* :mod:`.runner`  runs them in a process pool, resumably, into ``DIR/runs.jsonl``;
* :mod:`.report`  renders ``DIR/report.md`` and the figures from ``runs.jsonl`` alone.

``iein reproduce`` and ``iein report`` are the command-line front ends.
"""
from __future__ import annotations

from .plan import RunSpec, build_plan

__all__ = ["RunSpec", "build_plan"]
