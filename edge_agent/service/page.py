"""The agent's one web page: sign in with a token, upload eye images, see and review results."""

from __future__ import annotations

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Fovea screening</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 46rem; color: #222; }
 fieldset { margin-bottom: 1rem; border: 1px solid #ccc; border-radius: 6px; }
 label { display: block; margin: .4rem 0; }
 .eye { border: 1px solid #ddd; border-radius: 6px; padding: .6rem; margin: .5rem 0; }
 .refer { color: #a00; font-weight: bold; } .retake { color: #a60; font-weight: bold; }
 .rescreen { color: #070; font-weight: bold; } .error { color: #a00; }
 button { padding: .4rem 1rem; }
</style>
</head>
<body>
<h1>Diabetic retinopathy screening</h1>
<p>Images stay on this device.</p>
<fieldset>
 <legend>Sign in</legend>
 <label>Access token <input id="token" type="password" autocomplete="off" size="48"></label>
</fieldset>
<form id="screen-form">
 <fieldset>
  <legend>Screen a patient</legend>
  <label>Left eye <input id="left" name="left" type="file"
    accept="image/jpeg,image/png,application/dicom,.dcm"></label>
  <label>Right eye <input id="right" name="right" type="file"
    accept="image/jpeg,image/png,application/dicom,.dcm"></label>
  <button id="screen-btn" type="submit">Screen</button>
 </fieldset>
</form>
<div id="result" aria-live="polite"></div>
<form id="review-form" hidden>
 <fieldset>
  <legend>Clinician review</legend>
  <label>Case <select id="review-case"></select></label>
  <label>Grade <select id="review-grade">
   <option value="0">0 no DR</option><option value="1">1 mild NPDR</option>
   <option value="2">2 moderate NPDR</option><option value="3">3 severe NPDR</option>
   <option value="4">4 proliferative DR</option></select></label>
  <label><input id="review-gradable" type="checkbox" checked> Image is gradable</label>
  <label>Comment <input id="review-comment" type="text" size="40" maxlength="2000"></label>
  <button id="review-btn" type="submit">Confirm / correct</button>
 </fieldset>
</form>
<div id="review-status" aria-live="polite"></div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
$("token").value = sessionStorage.getItem("fovea-token") || "";
$("token").addEventListener("change",
  () => sessionStorage.setItem("fovea-token", $("token").value));
const auth = () => ({ Authorization: "Bearer " + $("token").value.trim() });
function text(tag, content, cls) {
  const el = document.createElement(tag);
  el.textContent = content;
  if (cls) el.className = cls;
  return el;
}
function showError(target, body, status) {
  const message = "Error " + status + ": " + (body.error || "request failed");
  target.replaceChildren(text("p", message, "error"));
}
$("screen-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData();
  for (const eye of ["left", "right"]) {
    const file = $(eye).files[0];
    if (file) form.append(eye, file, file.name);
  }
  const out = $("result");
  out.replaceChildren(text("p", "Screening..."));
  const response = await fetch("/v1/screen", { method: "POST", headers: auth(), body: form });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) { showError(out, body, response.status); return; }
  const rec = body.patient.recommendation;
  out.replaceChildren(
    text("h2", "Patient: " + rec.replaceAll("_", " "), rec.split("_")[0]),
    text("p", "Model " + body.model.name + " version " + body.model.version));
  const select = $("review-case");
  select.replaceChildren();
  for (const eye of body.eyes) {
    const box = document.createElement("div");
    box.className = "eye";
    box.dataset.eye = eye.eye;
    box.append(
      text("h3", eye.eye + " eye: " + eye.recommendation.replaceAll("_", " "),
           eye.recommendation.split("_")[0]),
      text("p", eye.quality.gradable
        ? "Grade " + eye.grade + " (" + eye.grade_name + "), referable: "
          + (eye.referable ? "yes" : "no")
          + " (p = " + eye.referable_probability.toFixed(3) + ")"
        : "Not gradable: " + eye.quality.reasons.join("; ")),
      text("p", "Case " + eye.case_id));
    out.append(box);
    const option = text("option", eye.eye + " eye, case " + eye.case_id.slice(0, 8));
    option.value = eye.case_id;
    select.append(option);
  }
  if (body.eyes.length && body.eyes[0].grade !== null) {
    $("review-grade").value = String(body.eyes[0].grade);
  }
  $("review-form").hidden = false;
});
$("review-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const payload = {
    grade: $("review-gradable").checked ? Number($("review-grade").value) : null,
    gradable: $("review-gradable").checked,
    comment: $("review-comment").value,
  };
  const caseId = $("review-case").value;
  const response = await fetch("/v1/cases/" + encodeURIComponent(caseId) + "/review", {
    method: "POST",
    headers: { ...auth(), "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) { showError($("review-status"), body, response.status); return; }
  const saved = "Review saved for case " + body.case_id + " (grade " + body.grade + ")";
  $("review-status").replaceChildren(text("p", saved));
});
</script>
</body>
</html>
"""

__all__ = ["PAGE_HTML"]
