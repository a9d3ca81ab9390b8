"use strict";
// The dashboard's pages, rendered in the browser from the server's JSON API. No framework, no build step:
// plain DOM and SVG. Live updates come from server-sent events that the server feeds from a watch.

const PHASES = ["Scheduled", "Pending", "Submitted", "Running", "Succeeded", "Failed", "Cancelled"];
const FINISHED = new Set(["Succeeded", "Failed", "Cancelled", "Skipped"]);
const SVG = "http://www.w3.org/2000/svg";
let config = { allowWrites: false, defaultNamespace: "default" };

// ------------------------------------------------------------------------------------------- helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key.startsWith("data-")) el.setAttribute(key, value);
    else el.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) el.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function phaseBadge(phase) {
  return h("span", { class: `phase ${phase || "none"}` }, phase || "-");
}

function parseTime(value) {
  return value ? new Date(value).getTime() : null;
}

function human(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "-";
  seconds = Math.max(0, Math.floor(seconds));
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 180) return `${minutes}m${seconds % 60 ? `${seconds % 60}s` : ""}`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours}h${minutes % 60 ? `${minutes % 60}m` : ""}`;
  return `${Math.floor(hours / 24)}d`;
}

function ago(value) {
  const t = parseTime(value);
  return t === null ? "-" : `${human((Date.now() - t) / 1000)} ago`;
}

function setLive(state, text) {
  const el = document.getElementById("live");
  el.className = `live ${state}`;
  el.textContent = text;
}

async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({ message: response.statusText }));
  if (!response.ok) throw new Error(body.message || `${response.status} ${response.statusText}`);
  return body;
}

function showError(container, error) {
  container.replaceChildren(h("div", { class: "error", role: "alert" }, String(error.message || error)));
}

function stream(params, handlers) {
  // One EventSource per page; the browser reconnects by itself and the server sends a fresh snapshot.
  const source = new EventSource(`/api/runs/stream?${new URLSearchParams(params)}`);
  source.addEventListener("open", () => setLive("on", "live"));
  source.addEventListener("error", () => setLive("off", "reconnecting"));
  for (const [kind, handler] of Object.entries(handlers)) {
    if (kind !== "failure") source.addEventListener(kind, (event) => handler(JSON.parse(event.data)));
  }
  source.addEventListener("failure", (event) => {
    setLive("off", "stopped");
    handlers.failure && handlers.failure(JSON.parse(event.data));
    source.close();
  });
  return source;
}

function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

function runLink(namespace, name) {
  return h("a", { href: `/runs/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}` }, name);
}

// ---------------------------------------------------------------------------------------------- runs

function runsPage(main) {
  document.getElementById("nav-runs").classList.add("active");
  const query = new URLSearchParams(location.search);
  const fields = {
    namespace: h("input", { id: "f-namespace", name: "namespace", value: query.get("namespace") || config.defaultNamespace, placeholder: "namespace (* for all)" }),
    flow: h("input", { id: "f-flow", name: "flow", value: query.get("flow") || "", placeholder: "any flow" }),
    phase: h("select", { id: "f-phase", name: "phase" }, h("option", { value: "" }, "any phase"), PHASES.map((p) => h("option", { value: p }, p))),
    label: h("input", { id: "f-label", name: "label", value: query.get("label") || "", placeholder: "team=ml,tier!=batch" }),
  };
  fields.phase.value = query.get("phase") || "";
  const count = h("span", { class: "count", id: "count" });
  const tbody = h("tbody", { id: "runs" });
  const error = h("div");
  main.replaceChildren(
    h("h1", {}, "Flow runs"),
    h("form", { class: "filters", id: "filters", onsubmit: (e) => e.preventDefault() },
      Object.entries(fields).map(([name, input]) => h("label", {}, name, input)), count),
    error,
    h("table", { id: "runs-table" },
      h("thead", {}, h("tr", {}, ["Name", "Flow", "Phase", "Attempt", "Started", "Duration", "Labels", "Message"].map((c) => h("th", {}, c)))),
      tbody),
  );

  const rows = new Map();
  let source = null;
  let first = true;

  function key(run) { return `${run.namespace}/${run.name}`; }

  function row(run) {
    const waits = (run.waitingFor || []).map((w) => `${w.name} #${w.position}`).join(", ");
    return h("tr", { "data-name": run.name, "data-namespace": run.namespace, "data-phase": run.phase || "" },
      h("td", {}, runLink(run.namespace, run.name), fields.namespace.value.trim() === "*" ? h("div", { class: "muted" }, run.namespace) : null),
      h("td", {}, run.flow),
      h("td", {}, phaseBadge(run.phase)),
      h("td", {}, run.attempt ?? "-"),
      h("td", { "data-time": run.startTime || "" }, run.startTime ? ago(run.startTime) : "-"),
      h("td", {}, run.duration || (run.startTime && !FINISHED.has(run.phase) ? human((Date.now() - parseTime(run.startTime)) / 1000) : "-")),
      h("td", {}, Object.entries(run.labels || {}).map(([k, v]) => h("span", { class: "label" }, `${k}=${v}`))),
      h("td", { class: "msg" }, run.message || "", waits ? h("div", { class: "muted" }, `waiting for ${waits}`) : null),
    );
  }

  function order(a, b) {
    // Newest first, as people look for what they just started.
    return (b.created || "").localeCompare(a.created || "") || a.name.localeCompare(b.name);
  }

  function renderAll() {
    const runs = [...rows.values()].map((r) => r.run).sort(order);
    const fragment = document.createDocumentFragment();
    for (const run of runs) {
      const tr = row(run);
      rows.get(key(run)).tr = tr;
      fragment.append(tr);
    }
    tbody.replaceChildren(fragment);
    count.textContent = `${rows.size} run${rows.size === 1 ? "" : "s"}`;
  }

  function upsert(run) {
    const existing = rows.get(key(run));
    const tr = row(run);
    tr.classList.add("flash");
    if (existing) {
      existing.tr.replaceWith(tr);
      existing.run = run;
      existing.tr = tr;
    } else {
      rows.set(key(run), { run, tr });
      // Insert at its place in the order without re-rendering the table.
      const next = [...rows.values()].map((r) => r.run).filter((r) => r !== run && order(run, r) < 0).sort(order)[0];
      const before = next ? rows.get(key(next)).tr : null;
      tbody.insertBefore(tr, before && before.parentNode === tbody ? before : null);
    }
    count.textContent = `${rows.size} run${rows.size === 1 ? "" : "s"}`;
  }

  function remove(run) {
    const existing = rows.get(key(run));
    if (!existing) return;
    existing.tr.remove();
    rows.delete(key(run));
    count.textContent = `${rows.size} run${rows.size === 1 ? "" : "s"}`;
  }

  function connect() {
    if (source) source.close();
    const params = {};
    for (const [name, input] of Object.entries(fields)) {
      if (input.value.trim()) params[name] = input.value.trim();
    }
    history.replaceState(null, "", `/runs?${new URLSearchParams(params)}`);
    rows.clear();
    error.replaceChildren();
    source = stream(params, {
      snapshot: (data) => {
        rows.clear();
        for (const run of data.items) rows.set(key(run), { run, tr: null });
        renderAll();
        if (first) {
          first = false;
          performance.mark("runs-rendered");
          document.body.dataset.rendered = "runs";
        }
      },
      upsert,
      delete: remove,
      failure: (data) => showError(error, data),
    });
  }

  const reconnect = debounce(connect, 350);
  for (const input of Object.values(fields)) {
    input.addEventListener("input", reconnect);
    input.addEventListener("change", reconnect);
  }
  setInterval(() => {
    for (const cell of tbody.querySelectorAll("td[data-time]")) {
      if (cell.dataset.time) cell.textContent = ago(cell.dataset.time);
    }
  }, 5000);
  connect();
}

// ----------------------------------------------------------------------------------------------- run

function history_(run, events) {
  // Phase history: every condition's last transition and every Event, oldest first.
  const items = [];
  if (run.created) items.push({ time: run.created, what: "Created", detail: `flow ${run.flow}` });
  for (const c of run.conditions || []) {
    items.push({ time: c.lastTransitionTime, what: `${c.type}=${c.status}`, reason: c.reason, detail: c.message, kind: "condition" });
  }
  for (const e of events) {
    items.push({ time: e.firstTime, what: e.reason, detail: e.message + (e.count > 1 ? ` (x${e.count})` : ""), kind: e.type === "Warning" ? "warning" : "event" });
  }
  return items.sort((a, b) => (a.time || "").localeCompare(b.time || ""));
}

function gantt(run, attempts, nowIso) {
  const now = parseTime(nowIso) || Date.now();
  const tasks = new Map(run.taskRuns.map((t) => [t.name, t]));
  const order = run.order.filter((name) => tasks.has(name));
  const byTask = new Map();
  for (const a of attempts) {
    if (!byTask.has(a.task)) byTask.set(a.task, []);
    byTask.get(a.task).push(a);
  }
  const spans = new Map();
  let t0 = parseTime(run.created) || now;
  let t1 = t0 + 1000;
  for (const name of order) {
    const task = tasks.get(name);
    const jobs = byTask.get(name) || [];
    const start = parseTime(task.startTime) ?? Math.min(...jobs.map((j) => parseTime(j.startTime || j.created)).filter((x) => x !== null));
    if (start === null || !Number.isFinite(start)) continue;
    const end = parseTime(task.completionTime) ?? (FINISHED.has(task.phase) ? start : now);
    spans.set(name, { start, end: Math.max(end, start) });
    t0 = Math.min(t0, start);
    t1 = Math.max(t1, end);
  }
  if (run.completionTime) t1 = Math.max(t1, parseTime(run.completionTime));
  const left = 170, right = 110, top = 26, rowHeight = 30, width = 1000;
  const height = top + order.length * rowHeight + 10;
  const scale = (t) => left + ((t - t0) / Math.max(1, t1 - t0)) * (width - left - right);
  const svg = s("svg", { class: "gantt", id: "gantt", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "timeline of the task runs" });
  const defs = s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 8 8", refX: "7", refY: "4", markerWidth: "7", markerHeight: "7", orient: "auto" }, s("path", { d: "M0,0 L8,4 L0,8 z", fill: "#7d8698" })));
  svg.append(defs);
  const axis = s("g", { class: "axis" });
  const seconds = (t1 - t0) / 1000;
  const step = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600].find((x) => seconds / x <= 8) || 7200;
  for (let x = 0; x <= seconds + 0.001; x += step) {
    const px = scale(t0 + x * 1000);
    axis.append(s("line", { class: "grid", x1: px, x2: px, y1: top - 6, y2: height }), s("text", { x: px, y: 14, "text-anchor": "middle" }, `+${human(x)}`));
  }
  svg.append(axis);
  const y = (i) => top + i * rowHeight;
  const anchor = new Map();
  const rowsGroup = s("g", { class: "rows" });
  order.forEach((name, i) => {
    const task = tasks.get(name);
    const phase = task.phase || "none";
    const g = s("g", { class: "gantt-row", "data-task": name, "data-phase": phase, "data-attempts": (byTask.get(name) || []).length || task.attempt || 0 });
    g.append(s("text", { x: 8, y: y(i) + 18 }, name), s("text", { class: "phase-label", x: left - 8, y: y(i) + 18, "text-anchor": "end" }, phase === "none" ? "-" : phase));
    const span = spans.get(name);
    if (span) {
      const x1 = scale(span.start), x2 = Math.max(scale(span.end), x1 + 3);
      g.append(s("rect", { class: `bar ${phase}`, x: x1, y: y(i) + 6, width: x2 - x1, height: rowHeight - 12 }, s("title", {}, `${name}: ${phase}, attempt ${task.attempt ?? "-"}${task.message ? ` - ${task.message}` : ""}`)));
      const jobs = (byTask.get(name) || []).slice().sort((a, b) => a.attempt - b.attempt);
      if (jobs.length > 1 || (task.attempt || 0) > 1) {
        // Each attempt's own span, outlined on the bar: retries are visible at a glance.
        for (const job of jobs) {
          const a1 = scale(parseTime(job.startTime || job.created) ?? span.start);
          const a2 = Math.max(scale(parseTime(job.completionTime) ?? span.end), a1 + 3);
          g.append(s("rect", { class: `attempt ${job.outcome}`, "data-attempt": job.attempt, x: a1, y: y(i) + 4, width: a2 - a1, height: rowHeight - 8 }, s("title", {}, `attempt ${job.attempt}: ${job.outcome}${job.reason ? ` (${job.reason})` : ""}`)));
          if (a2 - a1 > 18) g.append(s("text", { class: "attempt-label", x: a1 + 4, y: y(i) + 19 }, `#${job.attempt}`));
        }
      }
      anchor.set(name, { x1, x2, y: y(i) + rowHeight / 2 });
    } else {
      const deps = task.dependsOn.map((d) => spans.get(d)).filter(Boolean);
      const at = deps.length ? scale(Math.max(...deps.map((d) => d.end))) + 6 : left + 4;
      if (phase === "Skipped" || phase === "Cancelled") {
        g.append(s("rect", { class: "skipped", x: at, y: y(i) + 6, width: 70, height: rowHeight - 12 }), s("text", { class: "skipped-label", x: at + 8, y: y(i) + 19 }, phase.toLowerCase()));
      } else {
        g.append(s("text", { class: "skipped-label", x: at + 4, y: y(i) + 19 }, phase === "none" ? "not reported" : `${phase.toLowerCase()}`));
      }
      anchor.set(name, { x1: at, x2: at + 70, y: y(i) + rowHeight / 2 });
    }
    rowsGroup.append(g);
  });
  const edges = s("g", { class: "edges" });
  for (const name of order) {
    for (const dep of tasks.get(name).dependsOn) {
      const a = anchor.get(dep), b = anchor.get(name);
      if (!a || !b) continue;
      const mid = (a.x2 + b.x1) / 2;
      edges.append(s("path", { class: "edge", "data-from": dep, "data-to": name, "marker-end": "url(#arrow)", d: `M${a.x2},${a.y} C${Math.max(mid, a.x2 + 12)},${a.y} ${Math.min(mid, b.x1 - 12)},${b.y} ${b.x1 - 1},${b.y}` }));
    }
  }
  svg.append(edges, rowsGroup);
  return svg;
}

function runPage(main, namespace, name) {
  document.getElementById("nav-runs").classList.add("active");
  const body = h("div", { id: "run" });
  main.replaceChildren(h("p", {}, h("a", { href: `/runs?namespace=${encodeURIComponent(namespace)}` }, "← runs"), " ", h("span", { class: "muted" }, namespace)), body);

  async function act(verb) {
    const response = await fetch(`/api/runs/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}/${verb}`, { method: "POST", headers: { "X-Flowrun-Action": "1" } });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) alert(data.message || response.statusText);
    load();
  }

  async function load() {
    let data;
    try {
      data = await getJSON(`/api/runs/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`);
    } catch (error) {
      showError(body, error);
      return;
    }
    const run = data.run;
    const facts = [
      ["Flow", run.flow], ["Phase", phaseBadge(run.phase)], ["Attempt", `${run.attempt ?? "-"}${run.reruns ? ` (reruns: ${run.reruns})` : ""}`],
      ["Created", run.created ? `${run.created} (${ago(run.created)})` : "-"],
      ["Started", run.startTime ? `${run.startTime} (${ago(run.startTime)})` : "-"],
      ["Completed", run.completionTime || "-"], ["Duration", run.duration || "-"], ["Priority", run.priority],
      ["Labels", Object.entries(run.labels).map(([k, v]) => h("span", { class: "label" }, `${k}=${v}`))],
      ["Message", run.message || "-"],
    ];
    if (run.waitingFor.length) facts.push(["Waiting for", run.waitingFor.map((w) => h("div", {}, h("a", { href: `/limits/${encodeURIComponent(namespace)}/${encodeURIComponent(w.name)}` }, w.name), ` position ${w.position} (${w.inUse}/${w.limit} in use)`))]);
    if (run.statusError) facts.push(["Warning", run.statusError]);
    const actions = [];
    if (config.allowWrites) {
      if (!FINISHED.has(run.phase) && !run.cancelRequested) actions.push(h("button", { class: "danger", id: "cancel", onclick: () => act("cancel") }, "Cancel"));
      if (run.phase === "Failed" && !run.cancelRequested) actions.push(h("button", { id: "retry", onclick: () => act("retry") }, "Retry"));
    }
    const historyRows = history_(run, data.events).map((item) =>
      h("tr", { class: item.kind || "" }, h("td", {}, item.time || "-"), h("td", {}, item.what, item.reason ? h("div", { class: "muted" }, item.reason) : null), h("td", { class: "msg" }, item.detail || "")));
    const attemptRows = data.attempts.map((a) =>
      h("tr", {}, h("td", {}, a.task), h("td", {}, a.attempt), h("td", {}, a.jobName), h("td", {}, phaseBadge(a.outcome)), h("td", {}, a.startTime || "-"), h("td", {}, a.completionTime || "-"), h("td", {}, a.reason || "")));
    const taskRows = run.order.map((n) => run.taskRuns.find((t) => t.name === n)).map((t) =>
      h("tr", { "data-task": t.name }, h("td", {}, t.name), h("td", {}, phaseBadge(t.phase)), h("td", {}, t.attempt ?? "-"), h("td", {}, `${t.retries}`), h("td", {}, t.dependsOn.join(", ") || "-"), h("td", {}, t.tags.map((x) => h("span", { class: "label" }, x))), h("td", { class: "msg" }, t.message || "")));
    body.replaceChildren(
      h("h1", {}, run.name),
      h("div", { class: "card" }, h("dl", { class: "facts" }, facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])), actions.length ? h("div", { class: "actions" }, actions) : null),
      h("h2", {}, run.hasTasks ? "Timeline of the task runs" : "Timeline"),
      gantt(run, data.attempts, data.now),
      h("h2", {}, "Task runs"),
      h("table", { id: "tasks" }, h("thead", {}, h("tr", {}, ["Task", "Phase", "Attempt", "Retries", "Depends on", "Tags", "Message"].map((c) => h("th", {}, c)))), h("tbody", {}, taskRows)),
      h("div", { class: "cols" },
        h("div", {}, h("h2", {}, "Parameters"), h("pre", { id: "parameters" }, JSON.stringify(run.parameters, null, 2))),
        h("div", {}, h("h2", {}, "Phase history"), h("table", { id: "history" }, h("thead", {}, h("tr", {}, ["Time", "What", "Detail"].map((c) => h("th", {}, c)))), h("tbody", {}, historyRows)))),
      h("h2", {}, "Attempts (Jobs)"),
      attemptRows.length ? h("table", { id: "attempts" }, h("thead", {}, h("tr", {}, ["Task", "Attempt", "Job", "Outcome", "Started", "Finished", "Reason"].map((c) => h("th", {}, c)))), h("tbody", {}, attemptRows)) : h("p", { class: "muted" }, "No Jobs (not started yet, or deleted)."),
    );
    document.body.dataset.rendered = "run";
  }

  const reload = debounce(load, 250);
  stream({ namespace, name }, { snapshot: reload, upsert: reload, delete: reload });
  load();
}

// -------------------------------------------------------------------------------------------- limits

function limitsPage(main, namespace, name) {
  document.getElementById("nav-limits").classList.add("active");
  const query = new URLSearchParams(location.search);
  namespace = namespace || query.get("namespace") || config.defaultNamespace;
  const input = h("input", { id: "f-namespace", value: namespace });
  const body = h("div", { id: "limits" });
  main.replaceChildren(
    h("h1", {}, name ? `Limit ${name}` : "Concurrency limits"),
    name ? h("p", {}, h("a", { href: `/limits?namespace=${encodeURIComponent(namespace)}` }, "← all limits"), " ", h("span", { class: "muted" }, namespace))
      : h("form", { class: "filters", onsubmit: (e) => e.preventDefault() }, h("label", {}, "namespace", input)),
    body,
  );

  function meter(limit) {
    const width = 240;
    const capacity = Math.max(limit.limit, limit.inUse, 1);
    const used = (Math.min(limit.inUse, limit.limit) / capacity) * width;
    const over = (Math.max(0, limit.inUse - limit.limit) / capacity) * width;
    return s("svg", { viewBox: `0 0 ${width} 14`, role: "img", "aria-label": `${limit.inUse} of ${limit.limit} in use` },
      s("rect", { class: "free", x: 0, y: 0, width, height: 14, rx: 3 }),
      s("rect", { class: "used", x: 0, y: 0, width: used, height: 14, rx: 3 }),
      s("rect", { class: "over", x: used, y: 0, width: over, height: 14 }));
  }

  function card(limit) {
    const waiting = limit.waiting.map((w, i) =>
      h("tr", { "data-run": w.run, "data-task": w.task || "" },
        h("td", {}, i + 1), h("td", {}, w.position), h("td", {}, runLink(limit.namespace, w.run)), h("td", {}, w.task || "-"),
        h("td", {}, w.priority), h("td", {}, w.waitingSince || "-"), h("td", { "data-since": w.waitingSince || "" }, w.waitingSince ? human((Date.now() - parseTime(w.waitingSince)) / 1000) : "-")));
    return h("section", { class: "card limit", "data-limit": limit.name },
      h("h2", {}, h("a", { href: `/limits/${encodeURIComponent(limit.namespace)}/${encodeURIComponent(limit.name)}` }, limit.name), " ", h("span", { class: "muted" }, `caps ${limit.selects}`)),
      h("div", { class: "meter" }, meter(limit), h("strong", { class: "in-use" }, `${limit.inUse}/${limit.limit}`), " in use", h("span", { class: "muted" }, ` · ${limit.pending} pending`), limit.ready ? h("span", { class: "muted" }, ` · ${limit.ready.reason}`) : null),
      h("div", { class: "cols" },
        h("div", {}, h("h2", {}, `Holders (${limit.holders.length})`), limit.holders.length ? h("ul", { class: "holders" }, limit.holders.map((x) => h("li", {}, x.includes("/") ? x : runLink(limit.namespace, x)))) : h("p", { class: "muted" }, "none")),
        h("div", {}, h("h2", {}, `Waiting line (${limit.waiting.length})`), limit.waiting.length
          ? h("table", { class: "waiting" }, h("thead", {}, h("tr", {}, ["#", "Position", "Run", "Task", "Priority", "Waiting since", "Waited"].map((c) => h("th", {}, c)))), h("tbody", {}, waiting))
          : h("p", { class: "muted" }, "nobody waits"))));
  }

  let source = null;
  async function load() {
    const ns = (input.value.trim() || config.defaultNamespace);
    let data;
    try {
      data = await getJSON(name ? `/api/limits/${encodeURIComponent(ns)}/${encodeURIComponent(name)}` : `/api/limits?namespace=${encodeURIComponent(ns)}`);
    } catch (error) {
      showError(body, error);
      return;
    }
    body.replaceChildren(...(data.items.length ? data.items.map(card) : [h("p", { class: "muted" }, `No ConcurrencyLimits in namespace ${ns}.`)]));
    document.body.dataset.rendered = "limits";
  }
  const reload = debounce(load, 400);
  function connect() {
    if (source) source.close();
    const ns = input.value.trim() || config.defaultNamespace;
    if (!name) history.replaceState(null, "", `/limits?namespace=${encodeURIComponent(ns)}`);
    // Waiting lines live in the runs' status: reload when a run of the namespace changes.
    source = stream({ namespace: ns }, { snapshot: reload, upsert: reload, delete: reload });
  }
  input.addEventListener("input", debounce(() => { connect(); load(); }, 350));
  setInterval(() => {
    for (const cell of body.querySelectorAll("td[data-since]")) {
      if (cell.dataset.since) cell.textContent = human((Date.now() - parseTime(cell.dataset.since)) / 1000);
    }
  }, 1000);
  connect();
  load();
}

// -------------------------------------------------------------------------------------------- router

async function start() {
  try {
    config = await getJSON("/api/config");
  } catch (error) {
    setLive("off", "offline");
  }
  const main = document.getElementById("main");
  const parts = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "runs" && parts.length === 3) runPage(main, parts[1], parts[2]);
  else if (parts[0] === "limits") limitsPage(main, parts[1], parts[2]);
  else runsPage(main);
}

start();
