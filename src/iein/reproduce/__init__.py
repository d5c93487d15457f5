"""Regenerate the paper's analysis (Tables 1-5, Figure 3) with one command.

* :mod:`.plan`    which trainings the analysis needs (deduplicated run keys);
* :mod:`.runner`  the driver: runs them in a process pool (or on Ray), resumably, into
  ``DIR/runs.jsonl`` (:mod:`.records`), each run in a worker (:mod:`.worker`) on the data
  :mod:`.datasets` reads;
* :mod:`.report`  renders ``DIR/report.md`` and the figures from ``runs.jsonl`` alone.

``iein reproduce`` and ``iein report`` are the command-line front ends.
"""
from __future__ import annotations

from .plan import RunSpec, build_plan

__all__ = ["RunSpec", "build_plan"]
