// agentrun web page: chat, live stream, approvals inbox. Plain JavaScript over the HTTP API
// (/v1); no build step, no external resources. The API key lives in this tab's sessionStorage.
"use strict";

const API = "/v1";
const KEY_ITEM = "agentrun.key";
const TERMINAL = new Set(["DONE", "FAILED", "CANCELED"]);
const EVENT_TYPES = [
  "run.status", "message.delta", "stream.reset", "message.completed", "tool.call",
  "tool.result", "llm.usage", "error", "tool.approval_requested", "tool.result_requested",
  "tool.decided", "tool.decision_invalid", "budget.exceeded", "subrun.started", "subrun.waiting",
  "subrun.finished", "context.compacted", "context.compaction_failed", "message.interrupted",
  "run.rolled_back", "session.deleted",
];
const QUEUE_POLL_MS = 1000;
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
      const item = el("li", { "data-session-id": s.session_id },
        el("a", { href: `#/s/${enc(s.session_id)}`, text: label }),
        el("span", { class: "muted", text: sessionNote(s) }));
      item.append(new SessionDelete(s.session_id, label, item).node);
      list.append(item);
    }
    cursor = page.next_cursor;
    more.hidden = !cursor;
    $("#sessions-empty").hidden = list.children.length > 0;
  }
  more.addEventListener("click", () => load().catch(reportError));
  await load().catch(reportError);
}

class SessionDelete {
  // Delete asks first (inline, so it works with a keyboard and without dialogs); a chat with a
  // run still going is refused by the API (409) and the user may cancel that run and delete.
  constructor(sessionId, label, item) {
    this.path = `/sessions/${enc(sessionId)}`;
    this.item = item;
    this.error = el("span", { class: "error", role: "alert", hidden: true });
    this.ask = el("span", { class: "confirm", hidden: true },
      el("span", { text: "Delete this chat and its text for good?" }),
      this.confirm = el("button", { type: "button", class: "danger delete-confirm", onclick: () => this.send(false), text: "Delete" }),
      this.force = el("button", { type: "button", class: "danger delete-cancel-active", hidden: true,
        onclick: () => this.send(true), text: "Cancel the run and delete" }),
      el("button", { type: "button", class: "secondary delete-keep", onclick: () => this.show(false), text: "Keep" }));
    this.open = el("button", { type: "button", class: "secondary delete-open", "aria-label": `Delete chat ${label}`,
      onclick: () => this.show(true), text: "Delete" });
    this.node = el("span", { class: "confirm" }, this.open, this.ask, this.error);
  }

  show(on) {
    this.open.hidden = on;
    this.ask.hidden = !on;
    this.force.hidden = true;
    this.confirm.hidden = false;
    showError(this.error, "");
    if (on) this.ask.querySelector("button").focus();
  }

  async send(cancelActive) {
    const buttons = [...this.node.querySelectorAll("button")];
    buttons.forEach((b) => { b.disabled = true; });
    showError(this.error, cancelActive ? "cancelling the run, then deleting…" : "");
    try {
      await api("DELETE", this.path + (cancelActive ? "?cancel_active=true" : ""));
      const list = this.item.parentNode;
      this.item.remove();
      if (list) $("#sessions-empty").hidden = list.children.length > 0;
    } catch (exc) {
      if (exc.status === 409) {
        showError(this.error, "A run of this chat is still going.");
        this.force.hidden = false;
        this.confirm.hidden = true;
      } else showError(this.error, `Not deleted: ${exc.message}`);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }
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
  const chat = { sessionId, active: null, pending: new Map(), transcript };
  $("#session-title").textContent = sessionId ? `Chat ${sessionId}` : "New chat";

  if (sessionId) await loadSession(chat, transcript).catch(reportError);
  input.focus();
  let ticks = 0;
  const tick = () => {
    // Every second while something waits or runs here; every fifth second otherwise.
    const quiet = !chat.pending.size && !chat.active && $("#queue-box").hidden;
    if (quiet && ticks++ % 5) return;
    refreshQueue(chat).catch(reportError);
  };
  tick();
  state.timers.push(setInterval(tick, QUEUE_POLL_MS));

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const prompt = input.value;
    if (!prompt.trim()) return;
    showError(sendError, "");
    $("#send").disabled = true;
    try {
      const body = { prompt };
      if (chat.sessionId) body.session_id = chat.sessionId;
      const ifBusy = $("#if-busy").value;
      if (ifBusy) body.if_busy = ifBusy;
      const started = await api("POST", "/runs", body, { "Idempotency-Key": crypto.randomUUID() });
      if (input.value === prompt) input.value = ""; // not what was typed meanwhile
      if (!chat.sessionId) {
        chat.sessionId = started.session_id;
        history.replaceState(null, "", `#/s/${enc(started.session_id)}`);
        $("#session-title").textContent = `Chat ${started.session_id}`;
      }
      if (started.message_id) return await accepted(chat, started, prompt);
      transcript.append(userBubble(prompt, started.run_id));
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

// -- busy sessions: queued messages, interrupt, roll back -------------------------------------

function accepted(chat, started, prompt) {
  // A message sent with a policy: its run starts when the queue says so (at once when idle).
  chat.pending.set(started.message_id, { runId: started.run_id, prompt });
  const old = started.active_run_id;
  if (old && started.if_busy === "rollback") markRun(old, "rolled_back");
  if (old && started.if_busy === "interrupt") chat.interrupting = old;
  return refreshQueue(chat);
}

async function refreshQueue(chat) {
  if (!chat.sessionId || !state.key) return;
  const page = await api("GET", `/sessions/${enc(chat.sessionId)}/queue?all=true`);
  const waiting = page.messages.filter((m) => m.state === "queued");
  for (const m of page.messages) {
    const mine = chat.pending.get(m.message_id);
    if (!mine || m.state === "queued") continue;
    chat.pending.delete(m.message_id);
    if (m.state !== "started") {
      chat.transcript.append(el("p", { class: "notice quiet", text: `Your message was not sent on: ${m.state}${m.reason ? ` (${m.reason})` : ""}.` }));
      continue;
    }
    chat.transcript.append(userBubble(mine.prompt, m.run_id));
    followRun(chat, chat.transcript, m.run_id, 0);
  }
  const list = $("#queue");
  if (!list) return;
  list.replaceChildren(...waiting.map((m) => queuedItem(chat, m)));
  $("#queue-box").hidden = waiting.length === 0;
}

function queuedItem(chat, m) {
  const mine = chat.pending.get(m.message_id);
  const error = el("span", { class: "error", role: "alert", hidden: true });
  const cancel = el("button", { type: "button", class: "secondary queue-cancel", text: "Cancel",
    "aria-label": `Cancel the waiting message ${m.message_id}` });
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      await api("DELETE", `/sessions/${enc(chat.sessionId)}/queue/${enc(m.message_id)}`);
      chat.pending.delete(m.message_id);
      item.remove();
      $("#queue-box").hidden = $("#queue").children.length === 0;
    } catch (exc) {
      showError(error, exc.message);
      cancel.disabled = false;
    }
  });
  const item = el("li", { "data-message-id": m.message_id },
    el("span", { class: "text", text: mine ? mine.prompt : "a message sent elsewhere" }),
    el("span", { class: "muted", text: `${m.if_busy} · run ${m.run_id}` }), cancel, error);
  return item;
}

function markRun(runId, how) {
  // how: "rolled_back" (the whole run, its prompt too) or "interrupted" (its last answer).
  const sel = `[data-run-id="${CSS.escape(runId)}"]`;
  if (how === "rolled_back") {
    for (const node of document.querySelectorAll(`.msg.user${sel}, .run${sel}`)) markNode(node, how);
    return;
  }
  const answers = document.querySelectorAll(`.run${sel} .msg.assistant`);
  if (answers.length) markNode(answers[answers.length - 1], how);
}

function markNode(node, how) {
  if (node.classList.contains(how)) return;
  node.classList.add(how);
  node.dataset.state = how;
  node.prepend(el("span", { class: "mark", text: how === "rolled_back" ? "rolled back" : "interrupted" }));
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
      for (const m of messages.filter((x) => x.role === "user")) transcript.append(userBubble(m.content, runId, m.state));
      continue;
    }
    renderFinishedRun(transcript, messages, status.get(runId));
  }
  for (const runId of live) followRun(chat, transcript, runId, 0);
}

function userBubble(text, runId, how) {
  const node = el("div", { class: "msg user", "data-run-id": runId }, el("div", { class: "text", text }));
  if (how) markNode(node, how);
  return node;
}

function renderFinishedRun(transcript, messages, run) {
  const results = new Map(messages.filter((m) => m.role === "tool").map((m) => [m.tool_call_id, m]));
  let box = null;
  const delegates = new Map();
  for (const m of messages) {
    if (m.role === "user") {
      transcript.append(userBubble(m.content || "", m.run_id, m.state));
      box = null;
    }
    if (m.role !== "assistant") continue;
    if (!box) {
      box = el("div", { class: "run", "data-run-id": m.run_id });
      transcript.append(box);
    }
    if (m.state === "rolled_back") markNode(box, "rolled_back");
    if (m.content) {
      const answer = el("div", { class: "msg assistant" }, el("div", { class: "text", text: m.content }));
      if (m.state) markNode(answer, m.state);
      box.append(answer);
    }
    for (const call of m.tool_calls || []) {
      const card = new ToolCard(call.tool_call_id, call.name, call.arguments);
      if (call.decision) card.decided(call.decision, call.decided_by, call.decision_reason);
      const result = results.get(call.tool_call_id);
      const took = call.started_at && call.finished_at
        ? (Date.parse(call.finished_at) - Date.parse(call.started_at)) / 1000 : null;
      if (call.result !== null && call.result !== undefined) card.result(call.result, call.is_error, took);
      else if (result) card.result(result.content || "", false);
      if (call.name.startsWith("delegate_to_")) delegates.set(call.tool_call_id, card);
      box.append(card.node);
    }
  }
  if (delegates.size && messages.length) showSubruns(messages[0].run_id, delegates).catch(() => null);
  if (!run) return;
  if (!box) {
    box = el("div", { class: "run", "data-run-id": run.run_id });
    transcript.append(box);
  }
  const u = run.usage || {};
  box.append(el("div", { class: "run-meta" },
    el("span", { class: `status ${run.status}`, text: run.status }),
    el("span", { class: "usage", text: `${u.prompt_tokens || 0} in · ${u.completion_tokens || 0} out tokens` }),
    el("span", { class: "cost", text: costText(u) })));
}

async function showSubruns(runId, delegates) {
  // A finished run's sub-runs come from its event log (the transcript does not name them).
  const boxes = new Map();
  let after = 0;
  for (let pages = 0; pages < 10; pages += 1) {
    const page = await api("GET", `${runPath(runId)}/events?after=${after}&limit=1000`);
    for (const e of page.events) {
      if (!e.type.startsWith("subrun.") || e.type === "subrun.waiting") continue;
      let sub = boxes.get(e.data.subrun_id);
      const card = delegates.get(e.data.tool_call_id);
      if (!sub && card) {
        sub = new SubRunBox(e.data.subrun_id);
        boxes.set(e.data.subrun_id, sub);
        card.node.append(sub.node);
      }
      if (sub && e.type === "subrun.started") sub.started(e.data);
      if (sub && e.type === "subrun.finished") sub.finished(e.data);
    }
    if (page.ended || page.next_after <= after) return;
    after = page.next_after;
  }
}

function costText(u) {
  // cost_usd is an exact decimal string: shown as it is, never through a float.
  const parts = [];
  if (u.cost_usd !== null && u.cost_usd !== undefined) parts.push(`$${u.cost_usd}`);
  const n = u.unpriced_calls || 0;
  if (n > 0) parts.push(`cost unknown for ${n} call${n === 1 ? "" : "s"}`);
  return parts.join(" · ");
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
  const view = new RunView(runId, transcript, () => {
    if (chat.interrupting === runId) markRun(runId, "interrupted");
    hideBusy(chat, runId);
  });
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
    this.usage = { prompt_tokens: 0, completion_tokens: 0, cost_usd: null, unpriced_calls: 0 };
    this.subruns = new Map();
    this.onEnd = onEnd;
    this.ended = false;
    this.source = null;
    this.retry = null;
    this.node = el("div", { class: "run", "data-run-id": runId });
    this.meta = el("div", { class: "run-meta" },
      this.statusNode = el("span", { class: "status", text: "starting" }),
      this.usageNode = el("span", { class: "usage" }),
      this.costNode = el("span", { class: "cost" }),
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
      case "llm.usage": return this.addUsage(d);
      case "budget.exceeded": return this.notice("alert budget", budgetText(d));
      case "context.compacted":
        return this.notice("quiet compacted", `${d.messages} earlier messages were summarised to fit the context.`);
      case "context.compaction_failed":
        return this.notice("quiet compacted", "Summarising earlier messages failed; they were trimmed instead.");
      case "message.interrupted": return markRun(this.runId, "interrupted");
      case "run.rolled_back": return markRun(this.runId, "rolled_back");
      case "session.deleted": return this.notice("quiet", "This chat was deleted.");
      case "subrun.started": return this.subrun(d).started(d);
      case "subrun.waiting": return this.subrun(d).waiting(d);
      case "subrun.finished": return this.subrun(d).finished(d);
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
      for (const sub of this.subruns.values()) sub.closeQuestions(`the run ended ${d.status}`);
      this.refreshUsage();
      this.close();
      this.onEnd();
    }
  }

  addUsage(d) {
    const u = this.usage;
    u.prompt_tokens += d.prompt_tokens || 0;
    u.completion_tokens += d.completion_tokens || 0;
    if (d.cost_usd !== null && d.cost_usd !== undefined) u.cost_usd = addDecimal(u.cost_usd, d.cost_usd);
    else if ((d.prompt_tokens || 0) + (d.completion_tokens || 0) > 0) u.unpriced_calls += 1;
    this.showUsage(u);
  }

  showUsage(u) {
    this.usageNode.textContent = `${u.prompt_tokens || 0} in · ${u.completion_tokens || 0} out tokens`;
    this.costNode.textContent = costText(u);
  }

  async refreshUsage() {
    // The run's recorded totals (every attempt, summaries too) replace the live sum.
    try { this.showUsage((await api("GET", runPath(this.runId))).usage || this.usage); } catch { /* kept */ }
  }

  notice(kind, text) {
    const node = el("p", { class: `notice ${kind}`, role: kind.startsWith("alert") ? "alert" : null, text });
    this.node.insertBefore(node, this.meta);
    return node;
  }

  subrun(d) {
    let sub = this.subruns.get(d.subrun_id);
    if (!sub) {
      sub = new SubRunBox(d.subrun_id);
      this.subruns.set(d.subrun_id, sub);
      const parent = d.agent ? this.cards.get(d.tool_call_id) : null;
      if (parent) parent.node.append(sub.node);
      else this.node.insertBefore(sub.node, this.meta);
    }
    return sub;
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

function addDecimal(a, b) {
  // Exact sum of two decimal strings (no float): scaled BigInts.
  if (a === null || a === undefined) return String(b);
  const split = (x) => { const [i, f = ""] = String(x).split("."); return [i, f]; };
  const [ai, af] = split(a);
  const [bi, bf] = split(b);
  const scale = Math.max(af.length, bf.length);
  const big = (i, f) => BigInt(i + f.padEnd(scale, "0"));
  const sum = (big(ai, af) + big(bi, bf)).toString().padStart(scale + 1, "0");
  return scale ? `${sum.slice(0, -scale)}.${sum.slice(-scale)}` : sum;
}

function budgetText(d) {
  const who = d.budget === "session" ? "The chat's" : "The run's";
  const what = d.limit === "max_cost_usd" ? `cost budget of $${d.limit_value} (used $${d.used})`
    : `token budget of ${d.limit_value} tokens (used ${d.used})`;
  return `${who} ${what} is reached: the run stopped.`;
}

class SubRunBox {
  // A sub-agent's child run as seen from its parent: its agent, a link to its own chat (a
  // child's session id is its run id), its status, and its calls that wait for approval, which
  // are decided on the child.
  constructor(subrunId) {
    this.id = subrunId;
    this.cards = new Map();
    this.node = el("div", { class: "subrun", "data-subrun-id": subrunId },
      el("p", {}, this.agentNode = el("strong", { text: "sub-agent" }), " · run ",
        el("a", { class: "subrun-link", href: `#/s/${enc(subrunId)}`, text: subrunId }), " · ",
        this.statusNode = el("span", { class: "substatus", text: "RUNNING" })),
      this.errorNode = el("p", { class: "error", hidden: true }));
  }

  started(d) {
    this.agentNode.textContent = `sub-agent ${d.agent}`;
    return this;
  }

  waiting(d) {
    let card = this.cards.get(d.tool_call_id);
    if (!card) {
      card = new ToolCard(d.tool_call_id, d.name, d.arguments);
      card.node.dataset.subrunId = this.id;
      this.cards.set(d.tool_call_id, card);
      this.node.append(card.node);
    }
    this.setStatus("WAITING_APPROVAL");
    card.ask(this.id, d);
    this.watch();
    if (card.asking) {
      const done = card.asking.onDecided;
      card.asking.onDecided = (recorded) => { this.setStatus("RUNNING"); done(recorded); };
    }
    return this;
  }

  watch() {
    // A child's call decided elsewhere (its own chat, the inbox, the CLI) sends the parent no
    // event: while a question is open here, the child's pending calls are checked.
    if (this.timer) return;
    this.timer = setInterval(async () => {
      const open = [...this.cards.values()].filter((c) => c.asking);
      if (!open.length) { clearInterval(this.timer); this.timer = null; return; }
      let view;
      try { view = await api("GET", runPath(this.id)); } catch { return; }
      const pending = new Set(view.pending.map((p) => p.tool_call_id));
      for (const card of open) {
        if (pending.has(card.id)) continue;
        card.asking = null;
        card.questionNode.replaceChildren();
        card.node.classList.remove("approval");
        card.note("decided on the sub-run (see its chat)");
        this.setStatus(view.status);
      }
    }, INBOX_POLL_MS);
    state.timers.push(this.timer);
  }

  setStatus(status) {
    this.statusNode.textContent = status;
    this.statusNode.className = `substatus ${status}`;
  }

  finished(d) {
    this.setStatus(d.status);
    if (d.error) showError(this.errorNode, d.error);
    for (const card of this.cards.values()) {
      if (card.asking) card.closeQuestion(`the sub-run ended ${d.status} (see its chat)`);
    }
    return this;
  }

  closeQuestions(why) {
    for (const card of this.cards.values()) card.closeQuestion(why);
  }
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
