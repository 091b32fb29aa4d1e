// The vidcore playground: a page over this server's OpenAI-style videos API, nothing else.
// Every call goes to this origin with the API key (kept in sessionStorage) as a bearer token. Text from the
// server (prompts, errors, records) is only ever set as textContent, never parsed as HTML.
"use strict";

const KEY = "vidcore.apiKey";
const POLL_MS = 500;
const state = { current: null, timer: null, blobUrl: null, models: [] };
const $ = (id) => document.getElementById(id);

function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

function authHeaders(extra) {
  const headers = Object.assign({}, extra || {});
  const key = apiKey();
  if (key) headers.Authorization = "Bearer " + key;
  return headers;
}

// fetch under this origin with the key; a refusal becomes an Error carrying the server's one-line message
async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = authHeaders(opts.headers);
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    throw new Error("the server cannot be reached (" + e.message + ")");
  }
  if (!res.ok) {
    let message = res.status + " " + res.statusText;
    try {
      const body = await res.json();
      if (body && body.error && body.error.message) message = body.error.message;
    } catch (e) {
      // not JSON: keep the status line
    }
    const err = new Error(message);
    err.status = res.status;
    throw err;
  }
  return res;
}

function showError(message) {
  const el = $("error");
  el.textContent = message || "";
  el.hidden = !message;
}

function refused(err) {
  if (err.status === 401) $("key-row").hidden = false;
  showError(err.message);
}

// -- server, key, models --------------------------------------------------------------------------
async function loadHealth() {
  try {
    const health = await (await api("/health")).json();
    if (health.api_key_required) $("key-row").hidden = false;
    const workers = health.workers || [];
    const failed = workers.filter((w) => w.error);
    $("server-state").textContent = failed.length ? "a worker failed to load: " + failed[0].error
      : health.ready ? workers.length + " worker(s) ready" : "loading weights…";
    if (!health.ready && !failed.length) setTimeout(loadHealth, 2000);
  } catch (err) {
    $("server-state").textContent = err.message;
  }
}

async function loadModels() {
  try {
    const list = await (await api("/v1/models")).json();
    state.models = list.data.map((m) => m.id);
    const select = $("model");
    select.replaceChildren();
    for (const id of state.models) {
      const option = document.createElement("option");
      option.value = id;
      option.textContent = id;
      select.append(option);
    }
    showError("");
  } catch (err) {
    refused(err);
  }
}

function saveKey() {
  const value = $("api-key").value.trim();
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
  $("api-key").value = "";
  $("api-key").placeholder = value ? "key set for this tab" : "this server needs a key";
  loadModels();
  loadHistory();
}

// -- a create call --------------------------------------------------------------------------------
function requestBody() {
  const body = { prompt: $("prompt").value, model: $("model").value };
  const size = $("size").value.trim();
  if (size) body.size = size;
  for (const name of ["frames", "steps", "seed"]) {
    const text = $(name).value.trim();
    if (text !== "") body[name] = Number(text);
  }
  return body;
}

async function submit(event) {
  event.preventDefault();
  showError("");
  const button = $("submit");
  button.disabled = true;
  try {
    const res = await api("/v1/videos", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(requestBody()),
    });
    const video = await res.json();
    select(video.id);
    loadHistory();
  } catch (err) {
    refused(err);
  } finally {
    button.disabled = false;
  }
}

// -- the selected video: progress, player, record -------------------------------------------------
function select(id) {
  clearTimeout(state.timer);
  state.current = id;
  $("current").hidden = false;
  $("current-id").textContent = id;
  $("job-error").hidden = true;
  $("record-box").hidden = true;
  $("download").hidden = true;
  const player = $("player");
  player.hidden = true;
  player.removeAttribute("src");
  player.load();
  if (state.blobUrl) URL.revokeObjectURL(state.blobUrl);
  state.blobUrl = null;
  for (const row of document.querySelectorAll("#history tbody tr")) {
    row.classList.toggle("selected", row.dataset.id === id);
  }
  poll(id);
}

async function poll(id) {
  if (state.current !== id) return;
  let video;
  try {
    video = await (await api("/v1/videos/" + encodeURIComponent(id))).json();
  } catch (err) {
    $("current-status").textContent = "";
    $("job-error").textContent = err.message;
    $("job-error").hidden = false;
    return;
  }
  if (state.current !== id) return;
  $("current-status").textContent = video.status.replace("_", " ");
  $("current-status").className = "status-" + video.status;
  $("progress").value = video.progress;
  $("progress-text").textContent = video.progress + "%";
  if (video.status === "queued" || video.status === "in_progress") {
    state.timer = setTimeout(() => poll(id), POLL_MS);
    return;
  }
  loadHistory();
  loadRecord(id);
  if (video.status === "failed") {
    $("job-error").textContent = video.error ? video.error.message : "the job failed";
    $("job-error").hidden = false;
  } else if (video.status === "completed") {
    play(id);
  }
}

async function play(id) {
  try {
    const res = await api("/v1/videos/" + encodeURIComponent(id) + "/content");
    const blob = await res.blob();
    if (state.current !== id) return;
    state.blobUrl = URL.createObjectURL(new Blob([blob], { type: "video/mp4" }));
    const player = $("player");
    player.dataset.bytes = String(blob.size);
    player.src = state.blobUrl;
    player.hidden = false;
    player.play().catch(() => {}); // muted, so allowed; a refusal only means the user presses play
    const link = $("download");
    link.href = state.blobUrl;
    link.download = id + ".mp4";
    link.hidden = false;
  } catch (err) {
    $("job-error").textContent = err.message;
    $("job-error").hidden = false;
  }
}

async function loadRecord(id) {
  try {
    const record = await (await api("/v1/videos/" + encodeURIComponent(id) + "/record")).json();
    if (state.current !== id) return;
    $("record").textContent = JSON.stringify(record, null, 2);
    $("record-box").hidden = false;
  } catch (err) {
    $("record-box").hidden = true; // a failed job has no record
  }
}

// -- history ----------------------------------------------------------------------------------------
function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

async function loadHistory() {
  let page;
  try {
    page = await (await api("/v1/videos?limit=50&order=desc")).json();
  } catch (err) {
    refused(err);
    return;
  }
  const body = $("history").querySelector("tbody");
  body.replaceChildren();
  for (const video of page.data) {
    const row = document.createElement("tr");
    row.dataset.id = video.id;
    row.title = video.id;
    if (video.id === state.current) row.classList.add("selected");
    const created = new Date(video.created_at * 1000).toLocaleString();
    const status = video.status === "in_progress" ? "in progress " + video.progress + "%" : video.status;
    row.append(cell(created), cell(video.prompt || "", "prompt"), cell(video.model), cell(video.size),
      cell(status, "status-" + video.status));
    row.addEventListener("click", () => select(video.id));
    body.append(row);
  }
  $("history-empty").hidden = page.data.length > 0;
}

document.addEventListener("DOMContentLoaded", () => {
  $("create-form").addEventListener("submit", submit);
  $("key-save").addEventListener("click", saveKey);
  $("refresh").addEventListener("click", loadHistory);
  if (apiKey()) $("api-key").placeholder = "key set for this tab";
  loadHealth();
  loadModels();
  loadHistory();
});
