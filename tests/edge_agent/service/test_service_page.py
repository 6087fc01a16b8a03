"""The web page in headless Chromium: sign in, upload both eyes, see the result, review it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def test_page_screens_and_reviews(
    agent: Any, live: Any, browser: Any, fundus: Any, tmp_path: Path
) -> None:
    left, right = tmp_path / "left.png", tmp_path / "right.png"
    left.write_bytes(fundus(5))
    right.write_bytes(fundus(6))
    with live(agent.app) as server:
        page = browser.new_page()
        page.goto(server.url + "/")
        page.fill("#token", agent.tokens["technician"])
        page.dispatch_event("#token", "change")
        page.set_input_files("#left", str(left))
        page.set_input_files("#right", str(right))
        page.click("#screen-btn")
        page.wait_for_selector("#result .eye[data-eye='right']", timeout=15000)
        text = page.inner_text("#result")
        assert "Patient:" in text and "left eye" in text and "right eye" in text
        # a technician may not review: the page shows the 403
        page.click("#review-btn")
        page.wait_for_selector("#review-status .error", timeout=10000)
        assert "403" in page.inner_text("#review-status")
        page.fill("#token", agent.tokens["clinician"])
        page.select_option("#review-grade", "3")
        page.click("#review-btn")
        page.wait_for_function(
            "document.querySelector('#review-status').innerText.includes('Review saved')",
            timeout=10000,
        )
        case = page.eval_on_selector("#review-case", "el => el.value")
        latest = agent.store.get_case(case).latest_review
        assert (latest.grade, latest.user) == (3, "clinician-1")
        page.close()
