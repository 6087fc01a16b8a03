"""The site's own threshold in the agent: proposed in /v1/status from reviewed cases once its
interval is narrow enough, applied only by an admin, audited, used by the next screening and
kept across a restart for the same bundle only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import SIZE, FakePredictor, fundus_png
from fastapi.testclient import TestClient

from edge_agent.service import AgentConfig, ScreeningSettings, create_app
from edge_agent.service.sitepoint import SitePointWatch
from edge_agent.store import Store
from models import DR_GRADING
from models.preprocess import PreprocessSpec


def _reviewed_site(store: Store, n: int, seed: int = 0) -> None:
    """``n`` screened and reviewed eyes of a camera that lowers referable eyes' scores."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        referable = rng.random() < 0.3
        p = float(rng.beta(4, 3) if referable else rng.beta(2, 6))
        case = store.record_screening(
            user="tech", model_version=3, request={}, result={"referable_probability": p}
        )
        store.record_review(case, user="doc", grade=int(rng.integers(2, 5) if referable else 0))


def _app(tmp_path: Path, store: Store, bundle: str = "b1") -> tuple[TestClient, SitePointWatch]:
    site = SitePointWatch(tmp_path, bundle, 0.5, DR_GRADING, store)
    settings = ScreeningSettings(spec=PreprocessSpec(size=SIZE), referral_threshold=site.threshold)
    app = create_app(
        FakePredictor(), store, store, settings, AgentConfig(max_request_bytes=4 << 20),
        site_point=site,
    )  # fmt: skip
    return TestClient(app, raise_server_exceptions=False), site


def test_a_proposal_is_approved_by_an_admin_audited_and_used(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    admin, tech = store.add_user("ada", "admin"), store.add_user("tom", "technician")
    client, _ = _app(tmp_path, store)
    _reviewed_site(store, 60)  # about 18 referable eyes: too few
    early = client.get("/v1/status", headers={"Authorization": f"Bearer {admin}"}).json()
    assert early["threshold_proposals"] == []
    assert early["site_threshold"]["point"]["needed"] > 0
    refused = client.post("/v1/threshold/approve", headers={"Authorization": f"Bearer {admin}"})
    assert refused.status_code == 409 and "more referable reviewed cases" in refused.json()["error"]
    _reviewed_site(store, 400, seed=1)
    status = client.get("/v1/status", headers={"Authorization": f"Bearer {admin}"}).json()
    (proposal,) = status["threshold_proposals"]
    assert proposal["status"] == "pending" and proposal["threshold"] < 0.5
    assert proposal["current_sensitivity"] < 0.8 and proposal["sensitivity"] >= 0.95
    lo, hi = proposal["interval"]
    assert (hi - lo) / 2 <= 0.05
    denied = client.post("/v1/threshold/approve", headers={"Authorization": f"Bearer {tech}"})
    assert denied.status_code == 403
    done = client.post("/v1/threshold/approve", headers={"Authorization": f"Bearer {admin}"})
    assert (
        done.status_code == 200
        and done.json()["site_threshold"]["threshold"] == proposal["threshold"]
    )
    assert done.json()["threshold_proposals"] == []
    (entry,) = [e for e in store.audit_entries(limit=10_000) if e.action == "threshold.applied"]
    assert entry.actor == "ada" and entry.detail["from"] == 0.5
    form = {"image": ("eye.png", fundus_png(), "image/png")}
    screened = client.post("/v1/screen", files=form, headers={"Authorization": f"Bearer {tech}"})
    assert screened.json()["referral_threshold"] == proposal["threshold"]
    assert store.verify_audit().ok
    # a restart screens at it; another bundle starts from its own threshold again
    assert SitePointWatch(tmp_path, "b1", 0.5, DR_GRADING, store).threshold == proposal["threshold"]
    assert SitePointWatch(tmp_path, "b2", 0.6, DR_GRADING, store).threshold == 0.6
    store.close()


CARRIED = {"ready": True, "threshold": 0.37, "sensitivity": 0.96, "interval": [0.9, 0.99]}


def test_an_approved_site_threshold_travels_into_the_next_bundle(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    _reviewed_site(store, 400, seed=1)  # screened by model version 3
    first = SitePointWatch(tmp_path, "b1", 0.5, DR_GRADING, store, model_version=3)
    proposed = first.point().threshold
    first.approve("ada", "approved by an admin")
    # a site that never approved one keeps the next bundle's threshold, its entry shown
    other = tmp_path / "other"
    other.mkdir()
    fresh = SitePointWatch(other, "b2", 0.6, DR_GRADING, store, CARRIED, model_version=4)
    assert fresh.threshold == 0.6 and fresh.status()["site_threshold"]["carried"] == CARRIED
    # this site approved one under b1: b2 starts at its own entry, audited as carried
    second = SitePointWatch(tmp_path, "b2", 0.6, DR_GRADING, store, CARRIED, model_version=4)
    assert proposed is not None and second.threshold == 0.37
    entry = [e for e in store.audit_entries(limit=10_000) if e.action == "threshold.applied"][-1]
    assert entry.actor == "fovea-agent" and "carried into this bundle" in entry.detail["reason"]
    assert entry.detail["from"] == 0.6 and entry.detail["bundle"] == "b2"
    # model 4 screened nothing yet: the old model's scores propose nothing for it
    assert second.point().referable_reviews == 0 and not second.point().ready
    again = SitePointWatch(tmp_path, "b2", 0.6, DR_GRADING, store, CARRIED, model_version=4)
    assert again.threshold == 0.37  # a restart does not apply (or audit) it twice
    assert [e.action for e in store.audit_entries(limit=10_000)].count("threshold.applied") == 2
    assert store.verify_audit().ok
    store.close()
