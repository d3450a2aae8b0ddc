// Conveyor dashboard: draws every Pipeline's runs from the plugin's event
// stream and sends the buttons' requests back to it. The plugin acts with the
// user's own credentials; this page only shows what the API server says.
"use strict";

const token = new URLSearchParams(location.search).get("token") || "";
const state = { pipelines: [], runs: new Map() };
const cards = new Map(); // "ns/name" -> the run's card, kept so a comment being typed survives redraws

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function label(action) { return action.charAt(0).toUpperCase() + action.slice(1); }

async function act(run, action, stage, card) {
  const out = card.querySelector(".run-message");
  const comment = card.querySelector("input.comment").value;
  card.querySelectorAll("button").forEach(b => b.disabled = true);
  out.className = "run-message";
  out.textContent = "…";
  try {
    const resp = await fetch(`api/runs/${encodeURIComponent(run.namespace)}/${encodeURIComponent(run.name)}/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Conveyor-Token": token },
      body: JSON.stringify({ stage: stage || "", comment }),
    });
    const body = await resp.json();
    if (resp.ok) {
      out.className = "run-message done";
      out.textContent = body.message;
      card.querySelector("input.comment").value = "";
    } else {
      out.className = "run-message refused";
      out.textContent = body.error;
    }
  } catch (err) {
    out.className = "run-message refused";
    out.textContent = String(err);
  } finally {
    card.querySelectorAll("button").forEach(b => b.disabled = false);
  }
}

function stageEl(run, s, card) {
  return el("section", { class: `stage phase-${s.phase}`, "data-stage": s.name, "data-phase": s.phase },
    el("h3", {}, s.name, s.kind !== "auto" ? el("span", { class: "kind" }, ` (${s.kind})`) : null),
    el("div", { class: "stage-phase" }, `${s.symbol} ${s.phase}`),
    el("ul", { class: "jobs" }, (s.jobs || []).map(j =>
      el("li", { class: `job phase-${j.phase}`, "data-job": j.name, "data-phase": j.phase, title: j.message || j.phase },
        `${j.symbol} ${j.name}`, j.attempts > 1 ? ` (${j.attempts} tries)` : "",
        (j.results || []).length ? el("ul", { class: "results" }, j.results.map(r => el("li", {}, r))) : null))),
    el("ul", { class: "notes" }, notes(s).map(n => el("li", {}, n))),
    (s.actions || []).length ? el("div", { class: "actions" }, s.actions.map(a =>
      el("button", { class: a, "data-action": a, onclick: () => act(run, a, s.name, card) }, label(a)))) : null);
}

// notes says what the terminal graph says under a stage (StageView.Notes).
function notes(s) {
  const out = [];
  for (const d of s.decisions || []) {
    const verb = d.overrideFreeze ? "freeze overridden by" : s.kind === "manual" ? "triggered by" : d.decision === "Reject" ? "rejected by" : "approved by";
    out.push(`${verb} ${d.approver || "(unrecorded)"}${d.comment ? `: "${d.comment}"` : ""}`);
  }
  if (s.environment) out.push(`env ${s.environment}`);
  if (s.reusedFrom) out.push(`reused from ${s.reusedFrom}`);
  if (s.heldBy) out.push(`held by ${s.heldBy}`);
  if (!["Succeeded", "Pending", "Running"].includes(s.phase) && s.message) out.push(s.message);
  return out;
}

function runCard(run) {
  const key = `${run.namespace}/${run.name}`;
  let card = cards.get(key);
  if (!card) {
    card = el("article", { class: "run" },
      el("div", { class: "run-head" }), el("div", { class: "graph" }),
      el("div", { class: "run-foot" },
        el("input", { class: "comment", placeholder: "Comment (needed to reject or override)", "aria-label": "comment" }),
        el("output", { class: "run-message" })));
    cards.set(key, card);
  }
  card.className = `run phase-${run.phase}`;
  card.dataset.run = run.name;
  card.dataset.namespace = run.namespace;
  card.dataset.phase = run.phase;
  const where = run.currentStage ? ` at ${run.currentStage}` : "";
  const head = [
    el("span", { class: "phase" }, `${run.symbol} ${run.phase}${where}`),
    el("span", { class: "name" }, run.name),
    el("span", { class: "ref" }, run.ref + (run.commit ? ` @ ${run.commit.slice(0, 8)}` : "")),
    run.requester ? el("span", { class: "req" }, `requested by ${run.requester}`) : null,
    run.rerunOf ? el("span", { class: "req" }, `rerun of ${run.rerunOf}`) : null,
    ...(run.actions || []).map(a => el("button", { class: a, "data-action": a, onclick: () => act(run, a, "", card) }, label(a))),
  ];
  card.querySelector(".run-head").replaceChildren(...head.filter(Boolean));
  const graph = [];
  (run.stages || []).forEach((s, i) => {
    if (i > 0) graph.push(el("span", { class: "arrow" }, "→"));
    graph.push(stageEl(run, s, card));
  });
  card.querySelector(".graph").replaceChildren(...graph);
  return card;
}

function render() {
  const byPipeline = new Map(state.pipelines.map(p => [p, []]));
  for (const run of state.runs.values()) {
    const key = `${run.namespace}/${run.pipeline}`;
    if (!byPipeline.has(key)) byPipeline.set(key, []);
    byPipeline.get(key).push(run);
  }
  const sections = [];
  for (const [key, runs] of [...byPipeline.entries()].sort()) {
    runs.sort((a, b) => (b.created || "").localeCompare(a.created || "") || a.name.localeCompare(b.name));
    sections.push(el("section", { class: "pipeline", "data-pipeline": key },
      el("h2", {}, `Pipeline ${key}`),
      runs.length ? runs.map(runCard) : el("p", { class: "empty" }, "No runs yet.")));
  }
  if (!sections.length) sections.push(el("p", { class: "empty" }, "No Pipelines here."));
  document.getElementById("pipelines").replaceChildren(...sections);
}

function problem(text) {
  const p = document.getElementById("problem");
  p.hidden = !text;
  p.textContent = text || "";
}

async function whoami() {
  try {
    const resp = await fetch("api/whoami", { headers: { "X-Conveyor-Token": token } });
    const body = await resp.json();
    if (!resp.ok) { problem(body.error); return; }
    document.getElementById("scope").textContent = body.scope;
    const groups = (body.groups || []).join(", ");
    document.getElementById("who").textContent = body.username ? `acting as ${body.username}${groups ? ` (${groups})` : ""}` : "";
  } catch (err) { problem(String(err)); }
}

function connect() {
  const conn = document.getElementById("conn");
  const es = new EventSource(`api/events?token=${encodeURIComponent(token)}`);
  let pending = false;
  const later = () => { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; render(); }); } };
  es.onopen = () => { conn.textContent = "live"; conn.className = "conn live"; };
  es.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn down"; };
  es.onmessage = (m) => {
    const e = JSON.parse(m.data);
    switch (e.type) {
      case "reset": state.pipelines = e.pipelines || []; state.runs.clear(); problem(""); break;
      case "run": state.runs.set(`${e.run.namespace}/${e.run.name}`, e.run); break;
      case "deleted": state.runs.delete(`${e.namespace}/${e.name}`); cards.delete(`${e.namespace}/${e.name}`); break;
      case "error": problem(e.error); return;
      default: return;
    }
    later();
  };
}

whoami();
connect();
