// The simsearch page: search with a dropped, chosen or pasted photo, or from a result by its id.
// Plain browser JavaScript served by the server itself: no build step, nothing loaded from elsewhere.
"use strict";

const STAGES = ["decode", "transform", "queue", "forward", "search", "store"];
const $ = (id) => document.getElementById(id);
const el = (tag, className, text) => {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
};

const state = {
  token: sessionStorage.getItem("simsearch-token") || "",
  blobUrls: [],
  queryUrl: null,
  busy: 0,
};

function headers() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (response.status === 401) {
    $("token-form").hidden = false;
    $("token").focus();
  }
  if (!response.ok) {
    throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  }
  return { body, timing: parseServerTiming(response.headers.get("Server-Timing")) };
}

function parseServerTiming(header) {
  const out = {};
  for (const part of (header || "").split(",")) {
    const [name, ...params] = part.trim().split(";");
    const dur = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
    if (name && dur) out[name] = parseFloat(dur.slice(4));
  }
  return out;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setBusy(delta) {
  state.busy += delta;
  document.body.classList.toggle("busy", state.busy > 0);
}

function shortName(path) {
  const parts = path.split(/[\\/]/).filter(Boolean);
  return parts.slice(-2).join("/");
}

function freeBlobs() {
  for (const url of state.blobUrls) URL.revokeObjectURL(url);
  state.blobUrls = [];
}

// Thumbnails: a plain <img src> when the server is open; fetched with the token when it needs one.
async function setThumb(img, url) {
  if (!state.token) {
    img.src = url;
    return;
  }
  try {
    const response = await fetch(url, { headers: headers() });
    if (!response.ok) return;
    const blobUrl = URL.createObjectURL(await response.blob());
    state.blobUrls.push(blobUrl);
    img.src = blobUrl;
  } catch (_) {
    /* a missing preview leaves a grey tile */
  }
}

function k() {
  return parseInt($("k").value, 10) || 24;
}

function showQueryImage(src) {
  const drop = $("drop");
  $("query-image").src = src;
  $("query-preview").hidden = false;
  drop.classList.add("has-image");
}

function renderTimings(ms, timing) {
  const stages = STAGES.filter((s) => ms[s] !== undefined);
  const total = timing.total || stages.reduce((sum, s) => sum + ms[s], 0);
  const bar = $("timing-bar");
  const legend = $("timing-legend");
  bar.replaceChildren();
  legend.replaceChildren();
  const spent = stages.reduce((sum, s) => sum + ms[s], 0) || 1;
  for (const stage of stages) {
    const part = el("span", `stage-${stage}`);
    part.style.flexGrow = String(ms[stage] / spent);
    part.title = `${stage} ${ms[stage].toFixed(1)} ms`;
    bar.append(part);
    const item = el("li");
    item.append(el("i", `stage-${stage}`), `${stage} `, el("b", "", formatMs(ms[stage])));
    legend.append(item);
  }
  const totalItem = el("li", "total");
  totalItem.append("total ", el("b", "", formatMs(total)));
  legend.append(totalItem);
  $("timings").hidden = false;
}

function formatMs(value) {
  return value >= 100 ? `${Math.round(value)} ms` : `${value.toFixed(1)} ms`;
}

function renderResults(results) {
  freeBlobs();
  const grid = $("grid");
  grid.replaceChildren();
  $("empty").hidden = results.length > 0;
  $("empty").textContent = results.length ? "" : "No similar images found.";
  $("results-head").hidden = results.length === 0;
  for (const hit of results) {
    const card = el("li", "card");
    const button = el("button");
    button.type = "button";
    button.dataset.id = String(hit.id);
    button.title = `${hit.path}\nscore ${hit.score.toFixed(3)} — click to search from this image`;
    const thumb = el("div", "thumb");
    const img = el("img");
    img.alt = shortName(hit.path);
    img.loading = "lazy";
    img.decoding = "async";
    thumb.append(img, el("span", "score", hit.score.toFixed(3)), el("span", "rank", `#${hit.rank}`));
    const meter = el("div", "meter");
    const fill = el("span");
    fill.style.width = `${Math.max(0, Math.min(1, hit.score)) * 100}%`;
    meter.append(fill);
    const caption = el("div", "caption");
    const parts = shortName(hit.path).split("/");
    const where = parts.length > 1 ? `${parts[0]} · ` : "";
    caption.append(el("div", "name", parts[parts.length - 1]), el("div", "size", `${where}${hit.width} × ${hit.height}`));
    button.append(thumb, meter, caption);
    button.addEventListener("click", () => {
      location.hash = `image=${hit.id}`;
    });
    card.append(button);
    grid.append(card);
    setThumb(img, hit.thumbnail_url);
  }
}

async function searchFile(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    showError(`${file.name || "That file"} is not an image.`);
    return;
  }
  showError("");
  if (state.queryUrl) URL.revokeObjectURL(state.queryUrl);
  state.queryUrl = URL.createObjectURL(file);
  showQueryImage(state.queryUrl);
  $("query-title").textContent = file.name && file.name !== "image.png" ? `Similar to ${file.name}` : "Similar to your photo";
  if (location.hash) history.replaceState(null, "", location.pathname);
  const form = new FormData();
  form.append("image", file, file.name || "query");
  setBusy(1);
  try {
    const { body, timing } = await api(`/search?k=${k()}`, { method: "POST", body: form });
    renderResults(body.results);
    renderTimings(body.timings_ms, timing);
    $("results-title").textContent = `${body.results.length} similar images`;
  } catch (error) {
    showError(error.message);
  } finally {
    setBusy(-1);
  }
}

async function searchId(id) {
  showError("");
  setBusy(1);
  try {
    const [{ body, timing }, meta] = await Promise.all([
      api(`/images/${id}/similar?k=${k()}`),
      api(`/images/${id}`).then((r) => r.body).catch(() => null),
    ]);
    if (meta) {
      $("query-title").textContent = `Similar to ${shortName(meta.path)}`;
      await setThumb($("query-image"), meta.thumbnail_url);
      $("query-preview").hidden = false;
      $("drop").classList.add("has-image");
    }
    renderResults(body.results);
    renderTimings(body.timings_ms, timing);
    $("results-title").textContent = `${body.results.length} images similar to #${id}`;
    window.scrollTo({ top: 0, behavior: "smooth" });
  } catch (error) {
    showError(error.message);
  } finally {
    setBusy(-1);
  }
}

function fromHash() {
  const match = /^#image=(\d+)$/.exec(location.hash);
  if (match) searchId(match[1]);
}

async function loadInfo() {
  const dot = $("ready-dot");
  try {
    const { body } = await api("/info");
    const parts = [`${body.images.toLocaleString()} images`, body.model.replace(/^default:/, ""), body.device];
    $("facts-text").textContent = parts.join(" · ");
    dot.classList.toggle("ready", body.ready);
    dot.title = body.ready ? "ready" : "loading the model";
    if (!body.ready) setTimeout(loadInfo, 1000);
  } catch (error) {
    dot.classList.add("down");
    $("facts-text").textContent = error.message;
  }
}

function wire() {
  const drop = $("drop");
  const input = $("file");
  input.addEventListener("change", () => {
    searchFile(input.files[0]);
    input.value = "";
  });
  $("pick").addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      input.click();
    }
  });
  for (const name of ["dragenter", "dragover"]) {
    window.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const name of ["dragleave", "dragend"]) {
    window.addEventListener(name, () => drop.classList.remove("over"));
  }
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) searchFile(file);
  });
  document.addEventListener("paste", (event) => {
    const items = (event.clipboardData && event.clipboardData.items) || [];
    for (const item of items) {
      if (item.kind === "file" && item.type.startsWith("image/")) {
        event.preventDefault();
        searchFile(item.getAsFile());
        return;
      }
    }
  });
  $("k").addEventListener("change", fromHash);
  window.addEventListener("hashchange", fromHash);
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem("simsearch-token", state.token);
    $("token-form").hidden = true;
    showError("");
    loadInfo();
    fromHash();
  });
}

wire();
loadInfo();
fromHash();
