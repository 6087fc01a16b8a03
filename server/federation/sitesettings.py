"""Per-site settings a promoted bundle carries: each site's own referral threshold for the
new weights, proposed by the site from its held-out reviewed cases in the last round's
evaluation (``eval-site-*`` metrics; images and scores stay on the device).

A device whose site had approved its own threshold under the previous bundle starts the new
one at its entry here (the approval carries; the value is recomputed for the new model by the
same rule); any other device shows its entry and keeps the bundle's threshold.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge_agent.fl import M_EVAL_SITE
from edge_agent.screening import SITE_THRESHOLDS_FILE


def site_thresholds(per_site: Mapping[str, Any]) -> dict[str, Any]:
    """Each site's proposal for the candidate (``per_site``: site -> {"candidate": metrics}),
    or how many more referable reviewed cases it needs; sites whose agents predate it are left
    out."""
    sites: dict[str, Any] = {}
    for site, measured in sorted(per_site.items()):
        m = (measured or {}).get("candidate") or {}
        if f"{M_EVAL_SITE}threshold" not in m:
            continue
        threshold = float(m[f"{M_EVAL_SITE}threshold"])
        if threshold < 0:
            sites[site] = {"ready": False, "needed": int(m[f"{M_EVAL_SITE}needed"])}
            continue
        sites[site] = {
            "ready": True,
            "threshold": threshold,
            "sensitivity": float(m[f"{M_EVAL_SITE}sensitivity"]),
            "interval": [float(m[f"{M_EVAL_SITE}lower"]), float(m[f"{M_EVAL_SITE}upper"])],
            "cases": int(m.get("eval-num-examples", 0)),
        }
    return {
        "schema_version": 1,
        "source": "the promoted weights on each site's held-out reviewed cases (federated "
        "evaluation, last round)",
        "sites": sites,
    }


def write_site_thresholds(export_dir: Path, per_site: Mapping[str, Any]) -> Path:
    """Write ``site_thresholds.json`` into an export (the bundle's manifest then signs it)."""
    path = export_dir / SITE_THRESHOLDS_FILE
    path.write_text(json.dumps(site_thresholds(per_site), indent=1))
    return path


__all__ = ["site_thresholds", "write_site_thresholds"]
