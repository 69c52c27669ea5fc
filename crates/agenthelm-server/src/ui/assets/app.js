// AgentHelm web UI: plain JavaScript, no framework. Everything a run holds is put on the
// page with textContent, never as HTML.
"use strict";

const EVENT_TYPES = ["run_started", "run_finished", "run_resumed", "llm_call", "tool_call",
  "approval_requested", "approval", "step_started", "step_finished", "rollback_started",
  "compensation_started", "compensation_finished", "effect", "plan_submitted", "plan_reviewed",
  "note", "rate_limit_wait"];
const FINAL = ["succeeded", "failed", "cancelled", "rejected"];
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function words(name) { return String(name || "").replace(/_/g, " "); }

async function api(method, path, body) {
  const init = { method, headers: { "Accept": "application/json" }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (response.status === 401) { location.href = "/login"; }
  return { ok: response.ok, status: response.status, data: data || {} };
}

function showProblems(list, answer) {
  list.replaceChildren();
  const problems = (answer.data && answer.data.problems) || [];
  if (answer.data && answer.data.error) list.append(el("li", { class: "error" }, answer.data.error));
  for (const p of problems) {
    list.append(el("li", {}, p.field ? el("code", {}, p.field) : null, p.field ? " " : null, p.message));
  }
}

// ---- a run ----------------------------------------------------------------------------

function runPage(section) {
  const id = section.dataset.run;
  const times = {};
  let timer = null;
  let source = null;
  const refresh = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const answer = await api("GET", "/api/runs/" + encodeURIComponent(id));
      if (!answer.ok) return;
      drawRun(answer.data, times);
      if (FINAL.includes(answer.data.state) && source) { source.close(); source = null; }
    }, 100);
  };
  source = new EventSource("/api/runs/" + encodeURIComponent(id) + "/events");
  const onEvent = (message) => {
    let event = {};
    try { event = JSON.parse(message.data); } catch (_) { return; }
    if (event.step_id && event.type === "step_started") {
      times[event.step_id] = Object.assign(times[event.step_id] || {}, { start: event.timestamp_ms, end: null });
    }
    if (event.step_id && event.type === "step_finished") {
      times[event.step_id] = Object.assign(times[event.step_id] || {}, { end: event.timestamp_ms });
    }
    refresh();
  };
  for (const type of EVENT_TYPES) source.addEventListener(type, onEvent);
  refresh();
  const review = document.getElementById("review");
  if (review) reviewPlan(review, id);
}

function drawRun(run, times) {
  const state = document.getElementById("state");
  state.textContent = words(run.state);
  state.className = "badge state-" + run.state;
  document.getElementById("times").textContent =
    "started " + run.started + (run.finished ? " · finished " + run.finished : "");
  drawFacts(run);
  drawGraph(run.steps);
  drawTimeline(run.steps, times);
  drawSteps(run.steps);
  drawRollback(run.rollback);
  drawApprovals(run.approvals);
  const review = document.getElementById("review");
  if (review && run.state !== "awaiting_approval") review.hidden = true;
}

function drawFacts(run) {
  const u = run.usage || {};
  const cost = "$" + Number(run.cost_usd || 0).toFixed(4) + (run.cost_complete ? "" : " (some calls unpriced)");
  const facts = [["Cost", cost], ["LLM calls", u.llm_calls], ["Input tokens", u.input_tokens],
    ["Output tokens", u.output_tokens]];
  if (run.review && run.review.decision) {
    const verb = run.review.decision === "approve" ? "approved" : "rejected";
    facts.push(["Plan " + verb + " by", run.review.by + (run.review.edited ? " (edited)" : "")]);
    if (run.review.reason) facts.push(["Reason", run.review.reason]);
  }
  if (run.error) facts.push(["Error", run.error]);
  const box = document.getElementById("facts");
  box.replaceChildren(...facts.map(([k, v]) => el("div", { class: "fact" }, el("span", {}, k), el("strong", {}, v))));
}

function depths(steps) {
  const byId = Object.fromEntries(steps.map((s) => [s.id, s]));
  const depth = {};
  const visit = (s, seen) => {
    if (depth[s.id] !== undefined) return depth[s.id];
    if (seen.has(s.id)) return 0;
    seen.add(s.id);
    let d = 0;
    for (const dep of s.depends_on || []) if (byId[dep]) d = Math.max(d, visit(byId[dep], seen) + 1);
    depth[s.id] = d;
    return d;
  };
  steps.forEach((s) => visit(s, new Set()));
  return depth;
}

function drawGraph(steps) {
  const depth = depths(steps);
  const layers = [];
  for (const s of steps) (layers[depth[s.id]] = layers[depth[s.id]] || []).push(s);
  const W = 170, H = 44, GX = 60, GY = 18;
  const pos = {};
  layers.forEach((layer, x) => layer.forEach((s, y) => { pos[s.id] = { x: 10 + x * (W + GX), y: 10 + y * (H + GY) }; }));
  const width = 20 + layers.length * (W + GX);
  const height = 20 + Math.max(1, ...layers.map((l) => l.length)) * (H + GY);
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto" });
  marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }));
  defs.append(marker);
  root.append(defs);
  for (const s of steps) for (const dep of s.depends_on || []) {
    if (!pos[dep]) continue;
    const a = pos[dep], b = pos[s.id];
    root.append(svg("path", { d: `M${a.x + W},${a.y + H / 2} C${a.x + W + GX / 2},${a.y + H / 2} ${b.x - GX / 2},${b.y + H / 2} ${b.x},${b.y + H / 2}`, class: "edge", "marker-end": "url(#arrow)" }));
  }
  for (const s of steps) {
    const p = pos[s.id];
    const g = svg("g", { class: "node status-" + s.status, "data-step": s.id, transform: `translate(${p.x},${p.y})` });
    g.append(svg("rect", { width: W, height: H, rx: 8 }));
    const name = svg("text", { x: 10, y: 18, class: "name" });
    name.textContent = s.id.length > 22 ? s.id.slice(0, 21) + "…" : s.id;
    const status = svg("text", { x: 10, y: 35, class: "sub" });
    status.textContent = s.status + (s.tool ? " · " + s.tool : "");
    const title = svg("title");
    title.textContent = s.id + ": " + s.description;
    g.append(title, name, status);
    root.append(g);
  }
  document.getElementById("graph").replaceChildren(root);
}

function drawTimeline(steps, times) {
  const box = document.getElementById("timeline");
  const known = steps.filter((s) => times[s.id] && times[s.id].start);
  if (!known.length) { box.replaceChildren(el("p", { class: "empty" }, "Nothing has run yet.")); return; }
  const now = Date.now();
  const t0 = Math.min(...known.map((s) => times[s.id].start));
  const t1 = Math.max(...known.map((s) => times[s.id].end || now), t0 + 1);
  const rows = steps.map((s) => {
    const t = times[s.id];
    const bar = el("div", { class: "bar status-" + s.status });
    if (t && t.start) {
      bar.style.left = (100 * (t.start - t0) / (t1 - t0)) + "%";
      bar.style.width = Math.max(0.5, 100 * ((t.end || now) - t.start) / (t1 - t0)) + "%";
      bar.title = s.id + ": " + ((t.end || now) - t.start) + " ms";
    } else {
      bar.hidden = true;
    }
    return el("div", { class: "row" }, el("span", { class: "label" }, s.id), el("div", { class: "track" }, bar));
  });
  box.replaceChildren(...rows, el("p", { class: "scale" }, "0 – " + (t1 - t0) + " ms"));
}

function show(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value : JSON.stringify(value, null, 1);
}

function drawSteps(steps) {
  const rows = steps.map((s) => el("tr", { "data-step": s.id, class: "status-" + s.status },
    el("td", {}, el("code", {}, s.id)), el("td", {}, s.description),
    el("td", {}, s.tool ? "tool " + s.tool : (s.agent ? "agent " + s.agent : "")),
    el("td", {}, el("span", { class: "badge status-" + s.status }, s.status)),
    el("td", {}, s.attempts),
    el("td", { class: s.error ? "error" : "result" }, el("pre", {}, s.error ? s.error : show(s.result)))));
  document.getElementById("steps").replaceChildren(...rows);
}

function drawRollback(rollback) {
  const box = document.getElementById("rollback-box");
  box.hidden = !rollback;
  if (!rollback) return;
  const items = (rollback.order || []).map((step) => {
    const action = (rollback.actions || []).find((a) => a.step === step);
    const text = action ? `undo ${step} with ${action.tool}: ${action.state}` : `undo ${step}: not started`;
    return el("li", { class: "undo-" + (action ? action.state : "pending") }, text,
      action && action.error ? el("span", { class: "error" }, " — " + action.error) : null);
  });
  if (!items.length) items.push(el("li", {}, "nothing to undo"));
  document.getElementById("rollback").replaceChildren(...items);
}

function drawApprovals(approvals) {
  const box = document.getElementById("approvals-box");
  box.hidden = !approvals || !approvals.length;
  if (box.hidden) return;
  const rows = approvals.map((a) => el("tr", {},
    el("td", {}, el("code", {}, a.tool)), el("td", {}, a.step_id || ""),
    el("td", {}, el("pre", {}, show(a.edited_args ? a.edited_args : a.args))),
    el("td", {}, a.decision ? a.decision : el("a", { href: "/approvals" }, "pending")),
    el("td", {}, a.by || ""), el("td", {}, a.at || ""), el("td", {}, a.reason || "")));
  document.getElementById("approvals").replaceChildren(...rows);
}

// ---- plan review ----------------------------------------------------------------------

function reviewPlan(review, id) {
  const yaml = document.getElementById("plan-yaml");
  const original = yaml.value;
  const list = document.getElementById("problems");
  const status = document.getElementById("review-status");
  const mark = (answer) => {
    showProblems(list, answer);
    for (const cell of review.querySelectorAll("td.problem")) cell.textContent = "";
    for (const p of (answer.data && answer.data.problems) || []) {
      const m = /^steps\[(\d+)\]/.exec(p.field || "");
      const cell = m && review.querySelector(`tr[data-index="${m[1]}"] td.problem`);
      if (cell) cell.append(el("div", {}, (p.field.split(".").slice(1).join(".") || "step") + ": " + p.message));
    }
  };
  const check = async () => {
    const answer = await api("POST", "/api/plans/check", { plan: yaml.value });
    mark(answer);
    status.textContent = answer.ok ? "The plan passes its checks." : "";
    return answer.ok;
  };
  document.getElementById("check").addEventListener("click", check);
  document.getElementById("approve").addEventListener("click", async () => {
    const body = yaml.value === original ? {} : { plan: yaml.value };
    const answer = await api("POST", `/api/runs/${encodeURIComponent(id)}/approve`, body);
    if (!answer.ok) { mark(answer); status.textContent = ""; return; }
    status.textContent = "Approved: the run starts.";
    location.href = "/runs/" + encodeURIComponent(id);
  });
  document.getElementById("reject").addEventListener("click", async () => {
    const reason = document.getElementById("reason").value.trim();
    const answer = await api("POST", `/api/runs/${encodeURIComponent(id)}/reject`, reason ? { reason } : {});
    if (!answer.ok) { mark(answer); return; }
    location.href = "/runs/" + encodeURIComponent(id);
  });
}

// ---- approvals inbox ------------------------------------------------------------------

function inbox(box) {
  for (const card of box.querySelectorAll("article.call")) {
    const list = card.querySelector("ul.problems");
    for (const button of card.querySelectorAll("button[data-action]")) {
      button.addEventListener("click", async () => {
        const action = button.dataset.action;
        const body = { decision: action };
        if (action === "edit") {
          try { body.args = JSON.parse(card.querySelector("textarea.args").value); } catch (e) {
            showProblems(list, { data: { error: "The arguments are not JSON: " + e.message, problems: [] } });
            return;
          }
        }
        const reason = card.querySelector("input.reason").value.trim();
        if (reason) body.reason = reason;
        const answer = await api("POST", "/api/approvals/" + encodeURIComponent(card.dataset.id), body);
        if (!answer.ok) { showProblems(list, answer); return; }
        card.classList.add("decided");
        card.replaceChildren(el("p", { class: "done" }, (action === "deny" ? "Denied" : "Approved") + ": " + card.dataset.id));
        setTimeout(() => location.reload(), 600);
      });
    }
  }
}

// ---- submit ---------------------------------------------------------------------------

function submitPage(button) {
  const list = document.getElementById("problems");
  button.addEventListener("click", async () => {
    const plan = document.getElementById("submit-yaml").value;
    const approve = document.getElementById("submit-approve").checked;
    const answer = await api("POST", "/api/runs", { plan, approve });
    if (!answer.ok) { showProblems(list, answer); return; }
    location.href = "/runs/" + encodeURIComponent(answer.data.run_id);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const run = document.getElementById("run");
  if (run) runPage(run);
  const box = document.getElementById("inbox");
  if (box) inbox(box);
  const submit = document.getElementById("submit");
  if (submit) submitPage(submit);
});
