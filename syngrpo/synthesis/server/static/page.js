// The data server's live page: polls GET /v1/overview every second and redraws what changed.
// No framework, no build step; text from the server (labels, descriptions, errors) is set as text, never as HTML.
"use strict";

(function () {
  const REFRESH_MS = Number(new URLSearchParams(location.search).get("refresh_ms")) || 1000;
  const TOKEN_KEY = "syngrpo-token";
  const SVG = "http://www.w3.org/2000/svg";
  const images = new Map(); // "<job id>/<which>" -> blob URL (thumbnails never change)
  let token = null;
  let timer = null;

  function $(id) { return document.getElementById(id); }

  function readToken() {
    const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
    if (m) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search); // out of the address bar
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function headers() { return token ? { Authorization: "Bearer " + token } : {}; }

  function setText(id, value) {
    const el = $(id);
    const text = value === null || value === undefined ? "–" : String(value);
    if (el.textContent !== text) el.textContent = text;
  }

  function fmtRate(r) { return r === null || r === undefined ? "–" : r >= 10 ? r.toFixed(1) : r.toFixed(2); }

  function fmtAge(t) {
    if (!t) return "";
    const s = Math.max(0, Date.now() / 1000 - t);
    return s < 60 ? Math.round(s) + " s ago" : s < 3600 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function renderWorkers(workers) {
    const body = $("workers").querySelector("tbody");
    body.replaceChildren();
    for (const w of workers) {
      const tr = document.createElement("tr");
      tr.dataset.worker = w.name;
      cell(tr, w.name);
      cell(tr, w.device);
      cell(tr, w.state, "state state-" + w.state);
      cell(tr, w.running, "num");
      cell(tr, w.jobs_done, "num");
      cell(tr, w.jobs_failed, "num");
      cell(tr, w.hung_calls, "num");
      cell(tr, w.lost_calls, "num");
      const where = [w.isolation, w.pid ? "pid " + w.pid : null, w.node ? "node " + w.node : null,
                     w.restarts ? w.restarts + " restart(s)" : null].filter(Boolean).join(", ");
      cell(tr, where);
      cell(tr, w.error || "");
      body.appendChild(tr);
    }
    $("workers").hidden = workers.length === 0;
    $("no-workers").hidden = workers.length !== 0;
  }

  function renderFailures(failures, since) {
    const body = $("failures").querySelector("tbody");
    body.replaceChildren();
    for (const f of failures) {
      const tr = document.createElement("tr");
      cell(tr, f.reason);
      cell(tr, f.count, "num");
      cell(tr, f.example + (f.last_at ? " (" + fmtAge(f.last_at) + ")" : ""));
      body.appendChild(tr);
    }
    $("failures").hidden = failures.length === 0;
    $("no-failures").hidden = failures.length !== 0;
    setText("failures-since", since === "start" ? "(since the server started)" : "(jobs the store kept)");
  }

  async function imageUrl(path, key) {
    if (images.has(key)) return images.get(key);
    const resp = await fetch(path, { headers: headers() });
    if (!resp.ok) throw new Error(path + ": " + resp.status);
    const url = URL.createObjectURL(await resp.blob());
    images.set(key, url);
    return url;
  }

  function figure(job, which, caption) {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.alt = caption + " of job " + job.key;
    img.className = which;
    fig.appendChild(img);
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + job.width + " " + job.height);
    svg.setAttribute("preserveAspectRatio", "none");
    const size = Math.max(job.width, job.height) / 24; // in the image's pixels: the overlay scales with it
    (job.boxes || []).forEach(function (b, i) {
      const r = document.createElementNS(SVG, "rect");
      r.setAttribute("x", b[0]); r.setAttribute("y", b[1]);
      r.setAttribute("width", b[2] - b[0]); r.setAttribute("height", b[3] - b[1]);
      svg.appendChild(r);
      const t = document.createElementNS(SVG, "text");
      t.setAttribute("x", b[0] + size * 0.2); t.setAttribute("y", Math.max(size, b[1] - size * 0.25));
      t.setAttribute("font-size", size);
      t.setAttribute("stroke-width", size / 5);
      t.textContent = (job.labels || [])[i] || "";
      svg.appendChild(t);
    });
    fig.appendChild(svg);
    const cap = document.createElement("figcaption");
    cap.textContent = caption;
    fig.appendChild(cap);
    imageUrl(job[which], job.id + "/" + which).then(function (url) { img.src = url; }).catch(function () {
      cap.textContent = caption + " (no longer kept)";
    });
    return fig;
  }

  function renderPairs(recent) {
    const box = $("pairs");
    const wanted = recent.map(function (j) { return j.id; });
    const have = Array.from(box.children).map(function (el) { return el.dataset.job; });
    if (wanted.join() !== have.join()) {
      const existing = new Map(Array.from(box.children).map(function (el) { return [el.dataset.job, el]; }));
      const nodes = recent.map(function (job) {
        if (existing.has(job.id)) return existing.get(job.id);
        const div = document.createElement("div");
        div.className = "pair";
        div.dataset.job = job.id;
        const imgs = document.createElement("div");
        imgs.className = "images";
        imgs.appendChild(figure(job, "input", "original"));
        imgs.appendChild(figure(job, "result", "synthesized"));
        div.appendChild(imgs);
        const d = document.createElement("p");
        d.className = "description";
        d.textContent = job.description;
        div.appendChild(d);
        const meta = document.createElement("div");
        meta.className = "meta";
        meta.textContent = job.key + (job.seconds ? " · " + job.seconds.toFixed(2) + " s" : "") +
          (job.worker ? " · " + job.worker : "");
        div.appendChild(meta);
        return div;
      });
      box.replaceChildren.apply(box, nodes);
      const keep = new Set(wanted);
      for (const [key, url] of images) {
        if (!keep.has(key.split("/")[0])) { URL.revokeObjectURL(url); images.delete(key); }
      }
    }
    $("no-pairs").hidden = recent.length !== 0;
  }

  function render(o) {
    const s = o.server;
    const status = $("status");
    status.textContent = s.status;
    status.className = "badge " + s.status;
    status.title = s.reason || "";
    setText("server-info", [s.read_only ? "read-only store " + (s.store || "") : null, s.backend ? "backend " + s.backend : null,
      s.isolation ? "workers in " + s.isolation + "es" : null, "syngrpo " + s.version].filter(Boolean).join(" · "));
    setText("queue-depth", o.queue.depth);
    setText("queue-capacity", o.queue.capacity ? "of " + o.queue.capacity : "");
    setText("running", o.queue.running);
    setText("jobs-per-s", fmtRate(o.rate.jobs_per_s));
    setText("rate-window", o.rate.window_s ? "over " + Math.round(o.rate.window_s) + " s" : "");
    setText("done-total", o.jobs.done_total);
    setText("failed-total", o.jobs.failed_total);
    setText("cancelled-total", o.jobs.cancelled_total);
    renderWorkers(o.workers);
    renderFailures(o.failures, o.failures_since);
    renderPairs(o.recent);
    setText("updated", "updated " + new Date().toLocaleTimeString());
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  }

  function askToken(message) {
    clearTimeout(timer);
    $("main").hidden = true;
    $("token-form").hidden = false;
    $("token-error").textContent = message || "";
    $("token-input").focus();
  }

  async function refresh() {
    let resp;
    try {
      resp = await fetch("/v1/overview", { headers: headers(), cache: "no-store" });
    } catch (e) {
      $("status").textContent = "offline";
      $("status").className = "badge offline";
      timer = setTimeout(refresh, REFRESH_MS * 2);
      return;
    }
    if (resp.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      askToken(token ? "The server refused this token." : "");
      token = null;
      return;
    }
    if (resp.ok) {
      $("token-form").hidden = true;
      $("main").hidden = false;
      render(await resp.json());
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    token = readToken();
    $("token-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      token = $("token-input").value.trim();
      sessionStorage.setItem(TOKEN_KEY, token);
      $("token-input").value = "";
      refresh();
    });
    refresh();
  });
})();
