// The gateway's web page: pick a model, choose or drop an image, show the top labels.
// Plain browser JavaScript, no build step; every URL is relative so the page works under a prefix.
"use strict";

const KEY_STORAGE = "gateway.apiKey";   // sessionStorage only: the key dies with the tab
const TOP_K = 5;

const $ = (id) => document.getElementById(id);

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function authHeaders() {
  const key = apiKey();
  return key ? { "X-API-Key": key } : {};
}

function setStatus(text) {
  $("status").textContent = text;
}

// Shows any non-2xx answer as the gateway sent it: status, message, request id and raw body.
async function showError(response, fallbackMessage) {
  const text = response ? await response.text() : "";
  let body = null;
  try { body = JSON.parse(text); } catch (_) { /* not JSON: show the text as is */ }
  $("error-status").textContent = response ? `${response.status} ${response.statusText}` : "network error";
  $("error-message").textContent = (body && body.error) || fallbackMessage || text || "no message";
  $("error-request-id").textContent = (body && body.request_id) || (response && response.headers.get("X-Request-ID")) || "-";
  $("error-body").textContent = text;
  $("error").hidden = false;
  $("result").hidden = true;
  if (response && (response.status === 401 || response.status === 403)) {
    $("key-field").hidden = false;
    $("api-key").focus();
  }
}

function clearMessages() {
  $("error").hidden = true;
  setStatus("");
}

// GET /v1/models answers {"models": [{"model": <route>, "model_name", "state", "model_version",
// "classes", ...}, ...]}: every model the gateway serves, each with its own route.
function modelEntries(body) {
  const items = Array.isArray(body) ? body : (body.models || []);
  return items.map((item) => (typeof item === "string" ? { model: item } : item));
}

// The option for one model: its route as the value; its name, version and state as the text.
function modelOption(entry) {
  const details = [entry.model_name, entry.model_version !== undefined ? `v${entry.model_version}` : entry.state]
    .filter(Boolean).join(", ");
  const option = new Option(details ? `${entry.model} (${details})` : entry.model, entry.model);
  if (entry.classes) option.dataset.classes = String(entry.classes);
  return option;
}

// Top-5, or every class of a model that has fewer (the gateway refuses a top_k above the classes).
function topK() {
  const selected = $("model").selectedOptions[0];
  const classes = selected ? Number(selected.dataset.classes) : NaN;
  return Number.isFinite(classes) && classes > 0 ? Math.min(TOP_K, classes) : TOP_K;
}

async function loadModels() {
  let response;
  try {
    response = await fetch("v1/models", { headers: authHeaders() });
  } catch (err) {
    return showError(null, String(err));
  }
  if (!response.ok) return showError(response);
  const select = $("model");
  const previous = select.value;
  select.replaceChildren(...modelEntries(await response.json()).map(modelOption));
  if (previous) select.value = previous;
  clearMessages();
}

// Keys are on when the published spec lists security schemes; then the key field is shown.
async function detectAuth() {
  try {
    const spec = await (await fetch("openapi.json")).json();
    const schemes = (spec.components && spec.components.securitySchemes) || {};
    $("key-field").hidden = Object.keys(schemes).length === 0;
  } catch (_) {
    $("key-field").hidden = false;
  }
}

function showPreview(file) {
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.alt = `Preview of ${file.name}`;
  preview.hidden = false;
}

function renderPredictions(body) {
  // A single image gives a flat list of {wnid, label, score}.
  const predictions = body.predictions || [];
  const list = $("predictions");
  list.replaceChildren(...predictions.map((p) => {
    const item = document.createElement("li");
    item.className = "prediction";
    const percent = (p.score * 100).toFixed(1);
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = p.label;
    label.title = p.wnid;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("role", "img");
    bar.setAttribute("aria-label", `${p.label}: ${percent} percent`);
    const fill = document.createElement("span");
    fill.style.width = `${Math.max(0, Math.min(100, p.score * 100))}%`;
    bar.append(fill);
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `${percent}%`;
    score.dataset.score = String(p.score);
    item.append(label, bar, score);
    return item;
  }));
  $("result-model").textContent = body.model;
  $("result-version").textContent = body.model_version;
  // e.g. untrained weights: the scores are then meaningless, and the user should know.
  $("result-warning").textContent = body.warning ? `Warning: ${body.warning}` : "";
  $("result-warning").hidden = !body.warning;
  $("result").hidden = false;
}

async function classify(event) {
  event.preventDefault();
  clearMessages();
  const file = $("image").files[0];
  const model = $("model").value;
  if (!file) return showError(null, "choose an image first");
  if (!model) return showError(null, "no model to choose from: is the gateway configured?");
  const button = $("classify");
  button.disabled = true;
  setStatus(`Classifying ${file.name}…`);
  try {
    // The raw file as the body: the gateway reads image/* bodies directly, no base64 round trip.
    const response = await fetch(`v1/models/${encodeURIComponent(model)}/predict?top_k=${topK()}`, {
      method: "POST",
      headers: { "Content-Type": file.type || "application/octet-stream", ...authHeaders() },
      body: file,
    });
    if (!response.ok) {
      setStatus("");
      return await showError(response);
    }
    renderPredictions(await response.json());
    setStatus(`Done: ${file.name}`);
  } catch (err) {
    setStatus("");
    showError(null, String(err));
  } finally {
    button.disabled = false;
  }
}

function wireDropZone() {
  const zone = $("drop-zone");
  const input = $("image");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    if (e.dataTransfer.files.length) {
      input.files = e.dataTransfer.files;
      showPreview(input.files[0]);
    }
  });
  input.addEventListener("change", () => { if (input.files[0]) showPreview(input.files[0]); });
}

function wireKey() {
  const field = $("api-key");
  field.value = apiKey();
  field.addEventListener("change", () => {
    sessionStorage.setItem(KEY_STORAGE, field.value.trim());
    loadModels();
  });
}

document.addEventListener("DOMContentLoaded", async () => {
  wireDropZone();
  wireKey();
  $("classify-form").addEventListener("submit", classify);
  await detectAuth();
  await loadModels();
  document.body.dataset.ready = "true";
});
