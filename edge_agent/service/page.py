"""The agent's one web page: sign in with a token, upload eye images, see and review results.

The page speaks the bundle's task: its heading, the classes a clinician picks from (several at
once for a multilabel task) and how a result is shown come from the task spec.
"""

from __future__ import annotations

import html

from models import DR_GRADING, TaskSpec

_TEMPLATE = """<!doctype html>
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
<h1>__TITLE__</h1>
<p>__DESCRIPTION__Images stay on this device.</p>
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
  <label>__PICK__ <select id="review-grade"__MULTIPLE__>
__OPTIONS__</select></label>
  <label><input id="review-gradable" type="checkbox" checked> Image is gradable</label>
  <label>Comment <input id="review-comment" type="text" size="40" maxlength="2000"></label>
  <button id="review-btn" type="submit">Confirm / correct</button>
 </fieldset>
</form>
<div id="review-status" aria-live="polite"></div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const REVIEW_FIELD = "__FIELD__";
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
function answer(eye) {
  if (eye.grade !== undefined) return "Grade " + eye.grade + " (" + eye.grade_name + ")";
  if (Array.isArray(eye.labels)) return "Findings: " + (eye.labels.join(", ") || "none");
  return "Class: " + eye["class"];
}
function picked() {
  const values = Array.from($("review-grade").selectedOptions, (o) => Number(o.value));
  return $("review-grade").multiple ? values : values[0];
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
      text("p", eye.recommendation !== "retake_image"
        ? answer(eye) + ", referable: " + (eye.referable ? "yes" : "no")
          + " (p = " + eye.referable_probability.toFixed(3) + ")"
        : "Not gradable: " + eye.quality.reasons.join("; ")),
      text("p", "Case " + eye.case_id));
    out.append(box);
    const option = text("option", eye.eye + " eye, case " + eye.case_id.slice(0, 8));
    option.value = eye.case_id;
    select.append(option);
  }
  const first = body.eyes.length ? body.eyes[0] : null;
  if (first && first.grade !== undefined && first.grade !== null) {
    $("review-grade").value = String(first.grade);
  } else if (first && first.class_index !== undefined && first.class_index !== null) {
    $("review-grade").value = String(first.class_index);
  }
  $("review-form").hidden = false;
});
$("review-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const payload = {
    [REVIEW_FIELD]: $("review-gradable").checked ? picked() : null,
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
  const verdict = REVIEW_FIELD === "grade" ? "grade " + body.grade : String(body.label);
  const saved = "Review saved for case " + body.case_id + " (" + verdict + ")";
  $("review-status").replaceChildren(text("p", saved));
});
</script>
</body>
</html>
"""


def page_html(task: TaskSpec = DR_GRADING) -> str:
    """The page for ``task``: its name, description and classes (indices as option values)."""
    grading = task.kind == "grading"
    options = "\n".join(
        f'   <option value="{i}">{f"{i} " if grading else ""}{html.escape(c)}</option>'
        for i, c in enumerate(task.classes)
    )
    title = "Diabetic retinopathy screening" if task == DR_GRADING else f"{task.name} screening"
    description = f"{task.description} " if task != DR_GRADING and task.description else ""
    pick = "Grade" if grading else "Findings" if task.kind == "multilabel" else "Class"
    values = {
        "__TITLE__": html.escape(title),
        "__DESCRIPTION__": html.escape(description),
        "__PICK__": pick,
        "__MULTIPLE__": " multiple" if task.kind == "multilabel" else "",
        "__OPTIONS__": options,
        "__FIELD__": "grade" if grading else "label",
    }
    page = _TEMPLATE
    for key, value in values.items():
        page = page.replace(key, value)
    return page


PAGE_HTML = page_html(DR_GRADING)
"""The page for DR grading, the default task."""

__all__ = ["PAGE_HTML", "page_html"]
