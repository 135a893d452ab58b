// agentrun web page: chat, live stream, approvals inbox. Plain JavaScript over the HTTP API
// (/v1); no build step, no external resources. The API key lives in this tab's sessionStorage.
"use strict";

const API = "/v1";
const KEY_ITEM = "agentrun.key";
const TERMINAL = new Set(["DONE", "FAILED", "CANCELED"]);
const EVENT_TYPES = [
  "run.status", "message.delta", "stream.reset", "message.completed", "tool.call",
  "tool.result", "llm.usage", "error", "tool.approval_requested", "tool.result_requested",
  "tool.decided", "tool.decision_invalid",
];
const INBOX_POLL_MS = 2000;

const state = { key: sessionStorage.getItem(KEY_ITEM), keyMessage: "", views: [], timers: [] };
const $ = (sel, root = document) => root.querySelector(sel);

// -- the API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

async function api(method, path, body, headers = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  init.headers.Authorization = `Bearer ${state.key}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(API + path, init);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
  if (resp.status === 401) {
    forgetKey("The key was refused: it is unknown, malformed or revoked. Enter a valid key.");
    throw new ApiError(401, data);
  }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

const enc = encodeURIComponent;
const runPath = (runId) => `/runs/${enc(runId)}`;

function forgetKey(message) {
  sessionStorage.removeItem(KEY_ITEM);
  state.key = null;
  state.keyMessage = message || "";
  if (location.hash !== "#/key") location.hash = "#/key";
  else render();
}

// -- small DOM helpers -----------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function pretty(jsonText) {
  try { return JSON.stringify(JSON.parse(jsonText), null, 2); } catch { return jsonText; }
}

function clone(id) { return document.getElementById(id).content.cloneNode(true); }

function showError(node, message) {
  node.textContent = message;
  node.hidden = !message;
}

// -- routing ---------------------------------------------------------------------------------

function stopViews() {
  for (const view of state.views) view.close();
  for (const timer of state.timers) clearInterval(timer);
  state.views = [];
  state.timers = [];
}

function render() {
  stopViews();
  const main = $("#main");
  main.replaceChildren();
  const hash = location.hash || "#/";
  if (!state.key || hash === "#/key") return renderKey(main);
  if (hash === "#/inbox") return renderInbox(main);
  const match = hash.match(/^#\/s\/(.+)$/);
  if (match) return renderSession(main, decodeURIComponent(match[1]));
  if (hash === "#/new") return renderSession(main, null);
  return renderSessions(main);
}

window.addEventListener("hashchange", render);
function keyFromFragment() {
  // `agentrun demo` prints the page's URL as /#key=<dev key>: keep it for this tab and take it
  // out of the address bar (a fragment is never sent to a server).
  const match = location.hash.match(/^#key=([^&]+)$/);
  if (!match) return;
  state.key = decodeURIComponent(match[1]);
  sessionStorage.setItem(KEY_ITEM, state.key);
  history.replaceState(null, "", "#/");
}

window.addEventListener("DOMContentLoaded", () => {
  keyFromFragment();
  $("#forget-key").addEventListener("click", () => forgetKey(""));
  render();
  pollInboxCount();
});

// -- the key prompt --------------------------------------------------------------------------

function renderKey(main) {
  main.append(clone("tpl-key"));
  const error = $("#key-error");
  showError(error, state.keyMessage);
  const input = $("#key-input");
  input.focus();
  $("#key-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    state.key = input.value.trim();
    try {
      await api("GET", "/runs?limit=1");
    } catch (exc) {
      if (exc.status !== 401) showError(error, `Could not check the key: ${exc.message}`);
      else showError(error, state.keyMessage);
      return;
    }
    sessionStorage.setItem(KEY_ITEM, state.key);
    state.keyMessage = "";
    location.hash = "#/";
    render();
  });
}

// -- sessions --------------------------------------------------------------------------------

async function renderSessions(main) {
  main.append(clone("tpl-sessions"));
  $("#new-chat").addEventListener("click", () => { location.hash = "#/new"; });
  const list = $("#sessions");
  let cursor = null;
  const more = $("#more-sessions");
  async function load() {
    const page = await api("GET", `/sessions?limit=30${cursor ? `&cursor=${enc(cursor)}` : ""}`);
    for (const s of page.sessions) {
      const label = s.title || s.session_id;
      list.append(el("li", {},
        el("a", { href: `#/s/${enc(s.session_id)}`, text: label }),
        el("span", { class: "muted", text: sessionNote(s) })));
    }
    cursor = page.next_cursor;
    more.hidden = !cursor;
    $("#sessions-empty").hidden = list.children.length > 0;
  }
  more.addEventListener("click", () => load().catch(reportError));
  await load().catch(reportError);
}

function sessionNote(s) {
  const when = s.created_at ? new Date(s.created_at).toLocaleString() : "";
  return s.active_run_id ? `${when} · running` : when;
}

function reportError(exc) {
  if (exc.status === 401) return;
  const main = $("#main");
  main.prepend(el("p", { class: "error", role: "alert", text: exc.message }));
}

// -- one session: the transcript, the live run, the composer ---------------------------------

async function renderSession(main, sessionId) {
  main.append(clone("tpl-session"));
  const transcript = $("#transcript");
  const form = $("#message-form");
  const input = $("#message-input");
  const sendError = $("#send-error");
  const chat = { sessionId, active: null };
  $("#session-title").textContent = sessionId ? `Chat ${sessionId}` : "New chat";

  if (sessionId) await loadSession(chat, transcript).catch(reportError);
  input.focus();

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const prompt = input.value;
    if (!prompt.trim()) return;
    showError(sendError, "");
    $("#send").disabled = true;
    try {
      const body = { prompt };
      if (chat.sessionId) body.session_id = chat.sessionId;
      const started = await api("POST", "/runs", body, { "Idempotency-Key": crypto.randomUUID() });
      input.value = "";
      if (!chat.sessionId) {
        chat.sessionId = started.session_id;
        history.replaceState(null, "", `#/s/${enc(started.session_id)}`);
        $("#session-title").textContent = `Chat ${started.session_id}`;
      }
      transcript.append(userBubble(prompt));
      followRun(chat, transcript, started.run_id, 0);
    } catch (exc) {
      if (exc.status === 409 && exc.problem.active_run_id) {
        showBusy(chat, exc.problem.active_run_id);
        showError(sendError, exc.message);
      } else if (exc.status !== 401) {
        showError(sendError, exc.message);
      }
    } finally {
      $("#send").disabled = false;
    }
  });
  $("#busy-cancel").addEventListener("click", async () => {
    if (!chat.active) return;
    $("#busy-cancel").disabled = true;
    try {
      const answer = await api("POST", `${runPath(chat.active)}/cancel`, {});
      $("#busy-text").textContent = `Run ${answer.status}: ${answer.message}`;
    } catch (exc) {
      $("#busy-text").textContent = exc.message;
    } finally {
      $("#busy-cancel").disabled = false;
    }
  });
}

async function loadSession(chat, transcript) {
  const runs = (await api("GET", `/runs?session_id=${enc(chat.sessionId)}&limit=200`)).runs;
  const live = runs.filter((r) => !TERMINAL.has(r.status)).map((r) => r.run_id);
  const page = await api("GET", `/sessions/${enc(chat.sessionId)}/messages`);
  const byRun = new Map();
  for (const m of page.messages) {
    if (!byRun.has(m.run_id)) byRun.set(m.run_id, []);
    byRun.get(m.run_id).push(m);
  }
  const status = new Map(runs.map((r) => [r.run_id, r]));
  for (const [runId, messages] of byRun) {
    if (live.includes(runId)) {
      for (const m of messages.filter((x) => x.role === "user")) transcript.append(userBubble(m.content));
      continue;
    }
    renderFinishedRun(transcript, messages, status.get(runId));
  }
  for (const runId of live) followRun(chat, transcript, runId, 0);
}

function userBubble(text) {
  return el("div", { class: "msg user" }, el("div", { class: "text", text }));
}

function renderFinishedRun(transcript, messages, run) {
  const results = new Map(messages.filter((m) => m.role === "tool").map((m) => [m.tool_call_id, m]));
  let box = null;
  for (const m of messages) {
    if (m.role === "user") {
      transcript.append(userBubble(m.content || ""));
      box = null;
    }
    if (m.role !== "assistant") continue;
    if (!box) {
      box = el("div", { class: "run", "data-run-id": m.run_id });
      transcript.append(box);
    }
    if (m.content) box.append(el("div", { class: "msg assistant" }, el("div", { class: "text", text: m.content })));
    for (const call of m.tool_calls || []) {
      const card = new ToolCard(call.tool_call_id, call.name, call.arguments);
      if (call.decision) card.decided(call.decision, call.decided_by, call.decision_reason);
      const result = results.get(call.tool_call_id);
      const took = call.started_at && call.finished_at
        ? (Date.parse(call.finished_at) - Date.parse(call.started_at)) / 1000 : null;
      if (call.result !== null && call.result !== undefined) card.result(call.result, call.is_error, took);
      else if (result) card.result(result.content || "", false);
      box.append(card.node);
    }
  }
  if (!run) return;
  if (!box) {
    box = el("div", { class: "run", "data-run-id": run.run_id });
    transcript.append(box);
  }
  const u = run.usage || {};
  box.append(el("div", { class: "run-meta" },
    el("span", { class: `status ${run.status}`, text: run.status }),
    el("span", { class: "usage", text: `${u.prompt_tokens || 0} in · ${u.completion_tokens || 0} out tokens` })));
}

function showBusy(chat, runId) {
  chat.active = runId;
  $("#busy").hidden = false;
  $("#busy-text").textContent = `The agent is still answering (run ${runId}).`;
}

function hideBusy(chat, runId) {
  if (chat.active !== runId) return;
  chat.active = null;
  $("#busy").hidden = true;
}

function followRun(chat, transcript, runId, after) {
  showBusy(chat, runId);
  const view = new RunView(runId, transcript, () => hideBusy(chat, runId));
  state.views.push(view);
  view.open(after);
  return view;
}

// -- a run's live events ---------------------------------------------------------------------

class RunView {
  constructor(runId, container, onEnd) {
    this.runId = runId;
    this.lastSeq = 0;
    this.turns = new Map();
    this.cards = new Map();
    this.toolStarted = new Map();
    this.usage = { prompt: 0, completion: 0 };
    this.onEnd = onEnd;
    this.ended = false;
    this.source = null;
    this.retry = null;
    this.node = el("div", { class: "run", "data-run-id": runId });
    this.meta = el("div", { class: "run-meta" },
      this.statusNode = el("span", { class: "status", text: "starting" }),
      this.usageNode = el("span", { class: "usage" }),
      this.noteNode = el("span", { class: "note" }));
    this.node.append(this.meta);
    container.append(this.node);
  }

  open(after) {
    this.lastSeq = Math.max(this.lastSeq, after);
    const url = `${API}${runPath(this.runId)}/events?after=${this.lastSeq}&access_token=${enc(state.key)}`;
    const source = new EventSource(url);
    this.source = source;
    for (const type of EVENT_TYPES) source.addEventListener(type, (ev) => this.receive(type, ev));
    source.addEventListener("open", () => setReconnecting(this, false));
    source.addEventListener("error", () => this.lost());
  }

  lost() {
    if (this.ended) return;
    setReconnecting(this, true);
    if (this.source && this.source.readyState === EventSource.CLOSED) {
      // The browser gave up (an HTTP error): check the key, then open again from lastSeq.
      this.source = null;
      clearTimeout(this.retry);
      this.retry = setTimeout(async () => {
        try { await api("GET", runPath(this.runId)); } catch (exc) { if (exc.status === 401) return; }
        if (!this.ended) this.open(this.lastSeq);
      }, 1500);
    }
  }

  close() {
    this.ended = true;
    clearTimeout(this.retry);
    if (this.source) this.source.close();
    setReconnecting(this, false);
  }

  receive(type, ev) {
    const seq = Number(ev.lastEventId);
    if (!(seq > this.lastSeq)) return; // already shown: a resumed stream never doubles text
    this.lastSeq = seq;
    const data = JSON.parse(ev.data);
    this.apply(type, data, seq);
    this.node.dataset.lastSeq = String(seq);
  }

  apply(type, d) {
    switch (type) {
      case "run.status": return this.status(d);
      case "message.delta": return this.bubble(d.turn, d.attempt).append(d.text);
      case "stream.reset": return this.bubble(d.turn, d.attempt).reset();
      case "message.completed": return this.bubble(d.turn, d.attempt).complete(d.text);
      case "tool.call": return this.card(d).node;
      case "tool.approval_requested": return this.card(d).ask(this.runId, d);
      case "tool.result_requested": return this.card(d).note("waits for the client's result");
      case "tool.decided": return this.card(d).decided(d.decision, d.decided_by, d.reason);
      case "tool.decision_invalid": return this.card(d).note(`decision refused: ${d.error}`);
      case "tool.result": return this.card(d).result(d.result, d.is_error);
      case "llm.usage":
        this.usage.prompt += d.prompt_tokens || 0;
        this.usage.completion += d.completion_tokens || 0;
        this.usageNode.textContent = `${this.usage.prompt} in · ${this.usage.completion} out tokens`;
        return null;
      case "error":
        this.noteNode.textContent = d.retryable ? `retrying: ${d.message}` : d.message;
        return null;
      default: return null;
    }
  }

  status(d) {
    this.statusNode.textContent = d.status;
    this.statusNode.className = `status ${d.status}`;
    if (d.error) this.noteNode.textContent = d.error;
    if (TERMINAL.has(d.status)) {
      for (const card of this.cards.values()) card.closeQuestion(`the run ended ${d.status}`);
      this.close();
      this.onEnd();
    }
  }

  bubble(turn, attempt) {
    let b = this.turns.get(turn);
    if (!b) {
      b = new Bubble();
      this.turns.set(turn, b);
      this.node.insertBefore(b.node, this.meta);
    }
    b.attempt(attempt);
    return b;
  }

  card(d) {
    let card = this.cards.get(d.tool_call_id);
    if (!card) {
      card = new ToolCard(d.tool_call_id, d.name, d.arguments);
      this.cards.set(d.tool_call_id, card);
      this.node.insertBefore(card.node, this.meta);
    }
    return card;
  }
}

function setReconnecting(view, on) {
  view.reconnecting = on;
  $("#conn").hidden = !state.views.some((v) => v.reconnecting);
}

class Bubble {
  constructor() {
    this.node = el("div", { class: "msg assistant" }, this.text = el("div", { class: "text" }));
    this.current = null;
  }
  attempt(n) {
    // A delta of a newer attempt means the older attempt's partial text is gone.
    if (this.current !== null && n !== this.current) this.text.textContent = "";
    this.current = n;
  }
  append(text) { this.text.textContent += text; }
  reset() { this.text.textContent = ""; }
  complete(text) {
    this.text.textContent = text;
    this.node.dataset.complete = "true";
    if (!text) this.node.hidden = true;
  }
}

// -- tool call cards, approvals --------------------------------------------------------------

class ToolCard {
  constructor(toolCallId, name, argumentsText) {
    this.id = toolCallId;
    this.started = Date.now();
    this.node = el("article", { class: "card", "data-tool-call-id": toolCallId },
      el("h2", { text: `tool ${name}` }),
      el("pre", { class: "args", text: pretty(argumentsText) }),
      this.questionNode = el("div", { class: "question" }),
      this.decisionNode = el("p", { class: "decided", hidden: true }),
      this.noteNode = el("p", { class: "muted note", hidden: true }),
      this.resultNode = el("div", { class: "result", hidden: true }));
  }

  note(text) { this.noteNode.textContent = text; this.noteNode.hidden = false; }

  ask(runId, d) {
    if (this.decisionNode.hidden === false || this.asking) return this;
    this.asking = new ApprovalForm(runId, d, (recorded) =>
      this.decided(recorded.decision, recorded.decided_by, recorded.reason));
    this.node.classList.add("approval");
    this.questionNode.replaceChildren(this.asking.node);
    return this;
  }

  closeQuestion(why) {
    if (!this.asking) return;
    this.asking = null;
    this.questionNode.replaceChildren();
    this.note(`no decision: ${why}`);
  }

  decided(decision, by, reason) {
    this.asking = null;
    this.questionNode.replaceChildren();
    this.node.classList.remove("approval");
    const verb = decision === "reject" ? "rejected" : decision === "approve_with_edits" ? "approved with edits" : "approved";
    this.decisionNode.textContent = `${verb} by ${by}${reason ? `: ${reason}` : ""}`;
    this.decisionNode.hidden = false;
    return this;
  }

  result(text, isError, seconds) {
    // Live: from the call to its result as seen here; from the record: the tool's own times.
    const took = seconds === undefined ? (Date.now() - this.started) / 1000 : seconds;
    const label = isError ? "error" : "result";
    this.node.classList.toggle("error-result", Boolean(isError));
    this.resultNode.replaceChildren(
      el("p", { class: "muted", text: took === null ? label : `${label} (${took.toFixed(1)} s)` }),
      el("pre", { text }));
    this.resultNode.hidden = false;
    return this;
  }
}

class ApprovalForm {
  // The decision carries the arguments_sha256 of the arguments shown here, so a change
  // underneath is refused by the run, not silently applied.
  constructor(runId, d, onDecided) {
    this.path = `${runPath(runId)}/tool-calls/${enc(d.tool_call_id)}/decision`;
    this.sha = d.arguments_sha256;
    this.onDecided = onDecided;
    this.error = el("p", { class: "error", role: "alert", hidden: true });
    this.editor = el("textarea", { class: "json", "aria-label": "edited arguments (JSON)", spellcheck: "false" });
    this.editor.value = pretty(d.arguments);
    this.reason = el("input", { type: "text", "aria-label": "reason for rejecting", placeholder: "reason (optional)" });
    this.editBox = el("div", { class: "edit", hidden: true }, this.editor,
      el("div", { class: "actions" },
        el("button", { type: "button", onclick: () => this.sendEdit(), text: "Approve edited" }),
        el("button", { type: "button", class: "secondary", onclick: () => { this.editBox.hidden = true; }, text: "Cancel edit" })));
    this.rejectBox = el("div", { class: "reject", hidden: true }, this.reason,
      el("div", { class: "actions" },
        el("button", { type: "button", class: "danger", onclick: () => this.sendReject(), text: "Reject" })));
    this.node = el("div", { class: "ask" },
      el("p", { class: "muted", text: "This call waits for your approval." }),
      el("div", { class: "actions" },
        el("button", { type: "button", class: "approve", onclick: () => this.send({ decision: "approve" }), text: "Approve" }),
        el("button", { type: "button", class: "secondary edit-open", onclick: () => this.open(this.editBox), text: "Edit" }),
        el("button", { type: "button", class: "secondary reject-open", onclick: () => this.open(this.rejectBox), text: "Reject…" })),
      this.editBox, this.rejectBox, this.error);
  }

  open(box) {
    this.editBox.hidden = box !== this.editBox;
    this.rejectBox.hidden = box !== this.rejectBox;
    (box === this.editBox ? this.editor : this.reason).focus();
  }

  sendEdit() {
    let args;
    try {
      args = JSON.parse(this.editor.value);
    } catch (exc) {
      return showError(this.error, `not JSON: ${exc.message}`);
    }
    return this.send({ decision: "approve_with_edits", arguments: args });
  }

  sendReject() {
    const body = { decision: "reject" };
    if (this.reason.value.trim()) body.reason = this.reason.value.trim();
    return this.send(body);
  }

  async send(body) {
    showError(this.error, "");
    const buttons = [...this.node.querySelectorAll("button")];
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const recorded = await api("POST", this.path, { ...body, arguments_sha256: this.sha });
      this.onDecided(recorded);
    } catch (exc) {
      showError(this.error, exc.problem && exc.problem.errors
        ? `${exc.message}\n${JSON.stringify(exc.problem.errors)}` : exc.message);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }
}

// -- the approvals inbox ---------------------------------------------------------------------

async function waitingRuns() {
  return (await api("GET", "/runs?waiting_approval=true&limit=200")).runs;
}

function renderInbox(main) {
  main.append(clone("tpl-inbox"));
  const box = $("#inbox");
  const shown = new Map(); // tool_call_id -> card
  async function refresh() {
    const pending = new Map();
    for (const run of await waitingRuns()) {
      const view = await api("GET", runPath(run.run_id)).catch(() => null);
      for (const call of view ? view.pending : []) {
        if (call.kind === "approval") pending.set(call.tool_call_id, { run: view, call });
      }
    }
    for (const [id, card] of shown) {
      if (pending.has(id)) continue;
      card.node.remove(); // decided (here or elsewhere), or the run moved on
      shown.delete(id);
    }
    for (const [id, { run, call }] of pending) {
      if (shown.has(id)) continue;
      const card = new ToolCard(id, call.name, call.arguments);
      card.node.prepend(el("p", { class: "muted" }, "chat ",
        el("a", { href: `#/s/${enc(run.session_id)}`, text: run.session_id }), ` · run ${run.run_id}`));
      card.ask(run.run_id, call);
      shown.set(id, card);
      box.append(card.node);
    }
    $("#inbox-empty").hidden = shown.size > 0;
    updateCount(pending.size);
  }
  const tick = () => refresh().catch(reportError);
  tick();
  state.timers.push(setInterval(tick, INBOX_POLL_MS));
}

function updateCount(n) {
  const count = $("#inbox-count");
  count.textContent = String(n);
  count.hidden = n === 0;
}

function pollInboxCount() {
  const tick = async () => {
    if (!state.key || location.hash === "#/inbox") return;
    try { updateCount((await waitingRuns()).length); } catch { /* shown where it matters */ }
  };
  tick();
  setInterval(tick, INBOX_POLL_MS * 3);
}
