// streamtap built-in chat page: plain JS, no build step.
// Speaks the Vercel AI SDK UI message stream v1 (the same stream useChat reads),
// resumes a running answer after a reload (GET api/chat/{id}/stream replays it),
// stops runs server-side (POST api/chat/{id}/stop), answers interrupts, and draws
// a live waterfall of the run tree from the data-run parts.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const els = {
    messages: $("messages"), input: $("input"), form: $("composer"), send: $("send"), stop: $("stop"),
    status: $("status"), stream: $("opt-stream"), verbose: $("opt-verbose"), newChat: $("new-chat"),
    waterfall: $("waterfall"), total: $("trace-total"),
  };
  const store = window.localStorage;
  const KEY = "streamtap.chat";
  const token = (new URLSearchParams(location.hash.slice(1))).get("token") || sessionStorage.getItem("streamtap.token");
  if (token) sessionStorage.setItem("streamtap.token", token);

  let chatId = null;
  let messages = [];
  let busy = false;
  let stopped = false;
  const openState = new Map(); // details key -> open (user's choice)
  const elOf = new Map(); // message id -> element

  const rid = () => Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0")).join("");
  const headers = (json) => {
    const h = {};
    if (json) h["content-type"] = "application/json";
    if (token) h["authorization"] = "Bearer " + token;
    return h;
  };

  // -- persistence -------------------------------------------------------------
  function load() {
    try {
      const saved = JSON.parse(store.getItem(KEY) || "null");
      if (saved && saved.chatId) { chatId = saved.chatId; messages = saved.messages || []; }
    } catch (_) { /* a corrupt entry starts a new chat */ }
    if (!chatId) chatId = rid();
    els.verbose.checked = store.getItem(KEY + ".verbose") === "1";
    els.stream.checked = store.getItem(KEY + ".stream") !== "0";
    document.body.classList.toggle("verbose", els.verbose.checked);
  }
  let saveTimer = null;
  function save(now) {
    const write = () => { saveTimer = null; try { store.setItem(KEY, JSON.stringify({ chatId, messages })); } catch (_) { /* full */ } };
    if (now) { if (saveTimer) clearTimeout(saveTimer); write(); } else if (!saveTimer) saveTimer = setTimeout(write, 300);
  }

  // -- the UI message stream -----------------------------------------------------
  async function* frames(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, cut); buf = buf.slice(cut + 2);
        const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
        if (!data) continue; // a comment (keep-alive) or an id-only frame
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }

  function apply(msg, c) {
    const parts = msg.parts;
    const find = (pred) => parts.find(pred);
    const tool = (id) => find((p) => p.type === "dynamic-tool" && p.toolCallId === id);
    switch (c.type) {
      case "start-step": parts.push({ type: "step-start" }); break;
      case "text-start": case "reasoning-start":
        parts.push({ type: c.type.split("-")[0], id: c.id, text: "", state: "streaming" }); break;
      case "text-delta": case "reasoning-delta": {
        const p = find((q) => q.id === c.id && q.type === c.type.split("-")[0]);
        if (p) p.text += c.delta; break;
      }
      case "text-end": case "reasoning-end": {
        const p = find((q) => q.id === c.id && q.type === c.type.split("-")[0]);
        if (p) p.state = "done"; break;
      }
      case "tool-input-start":
        parts.push({ type: "dynamic-tool", toolCallId: c.toolCallId, toolName: c.toolName, state: "input-streaming", rawInput: "", t0: Date.now() }); break;
      case "tool-input-delta": { const p = tool(c.toolCallId); if (p) p.rawInput += c.inputTextDelta; break; }
      case "tool-input-available": {
        let p = tool(c.toolCallId);
        if (!p) { p = { type: "dynamic-tool", toolCallId: c.toolCallId, t0: Date.now() }; parts.push(p); }
        Object.assign(p, { toolName: c.toolName, input: c.input, state: "input-available" }); break;
      }
      case "tool-output-available": { const p = tool(c.toolCallId); if (p) Object.assign(p, { output: c.output, state: "output-available", t1: Date.now() }); break; }
      case "tool-output-error": { const p = tool(c.toolCallId); if (p) Object.assign(p, { errorText: c.errorText, state: "output-error", t1: Date.now() }); break; }
      case "error": msg.error = c.errorText; break;
      case "finish": msg.finishReason = c.finishReason || "stop"; break;
      case "abort": msg.aborted = c.reason || "stopped"; break;
      case "message-metadata": msg.metadata = Object.assign(msg.metadata || {}, c.messageMetadata); break;
      default:
        if (c.type.startsWith("data-")) {
          const p = c.id != null ? find((q) => q.type === c.type && q.id === c.id) : null;
          if (p) p.data = c.data; else if (!c.transient) parts.push({ type: c.type, id: c.id, data: c.data });
        }
    }
  }

  async function consume(response, replay) {
    let msg = null;
    for await (const c of frames(response)) {
      if (c.type === "start") {
        const id = c.messageId || rid();
        msg = messages.find((m) => m.id === id && m.role === "assistant");
        if (msg) { msg.parts = []; delete msg.error; delete msg.aborted; delete msg.finishReason; } // a replay rebuilds the message
        else { msg = { id, role: "assistant", parts: [] }; messages.push(msg); }
        msg.metadata = c.messageMetadata || {};
        msg.streaming = true;
        setStatus(replay ? "Resumed the running answer." : "");
      } else if (msg) {
        apply(msg, c);
      }
      schedule(msg);
    }
    if (msg) { msg.streaming = false; if (!msg.finishReason && !msg.aborted && !msg.error) msg.error = "The stream ended early."; }
    schedule(msg);
    save(true);
    return msg;
  }

  // -- requests ------------------------------------------------------------------
  function wire(m) { // what the server needs of a message: text parts only
    return { id: m.id, role: m.role, parts: m.parts.filter((p) => p.type === "text").map((p) => ({ type: "text", text: p.text })) };
  }

  async function submit(text, resumeValue) {
    if (busy) return;
    const user = { id: rid(), role: "user", parts: [{ type: "text", text }] };
    messages.push(user);
    renderAll(); save(true);
    // The recent turns only: a long chat must not outgrow the server's body and message limits.
    const body = { id: chatId, messages: messages.slice(-100).map(wire), trigger: "submit-message", verbose: true, stream: els.stream.checked };
    if (resumeValue !== undefined) body.resume = resumeValue;
    await run(() => fetch("api/chat", { method: "POST", headers: headers(true), body: JSON.stringify(body) }), false);
  }

  async function run(request, replay) {
    setBusy(true); stopped = false;
    try {
      const res = await request();
      if (res.status === 204) return;
      if (!res.ok) {
        let err = res.status + " " + res.statusText;
        try { err = (await res.json()).error || err; } catch (_) { /* not JSON */ }
        setStatus("Error: " + err, true);
        return;
      }
      await consume(res, replay);
    } catch (e) {
      setStatus(stopped ? "" : "Connection lost: " + e.message + ". Reload to resume.", !stopped);
    } finally {
      setBusy(false);
    }
  }

  async function stop() {
    stopped = true;
    els.stop.disabled = true;
    setStatus("Stopping…");
    try { await fetch(`api/chat/${encodeURIComponent(chatId)}/stop`, { method: "POST", headers: headers(false) }); }
    catch (e) { setStatus("Stop failed: " + e.message, true); }
  }

  async function resumeOnLoad() {
    setStatus("Checking for a running answer…");
    const base = `api/chat/${encodeURIComponent(chatId)}/stream`;
    let got = false;
    await run(async () => { const r = await fetch(base, { headers: headers(false) }); got = r.status !== 204; return r; }, true);
    // An answer that was streaming when the page went away and has finished since: fetch it whole.
    const last = [...messages].reverse().find((m) => m.role === "assistant");
    if (!got && last && last.streaming && last.metadata && last.metadata.runId) {
      await run(() => fetch(`${base}?run=${encodeURIComponent(last.metadata.runId)}`, { headers: headers(false) }), true);
    }
    for (const m of messages) if (m.streaming) { m.streaming = false; m.error = m.error || "The answer was interrupted and can no longer be fetched."; }
    if (els.status.textContent.startsWith("Checking")) setStatus("");
    renderAll(); save(true);
  }

  // -- rendering -----------------------------------------------------------------
  const esc = (s) => String(s).replace(/[&<>"]/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[ch]));
  const json = (v) => esc(typeof v === "string" ? v : JSON.stringify(v, null, 2));
  const fmt = (s) => (s == null ? "" : s < 1 ? Math.round(s * 1000) + " ms" : s.toFixed(2) + " s");

  function details(key, cls, summary, body, defaultOpen) {
    const open = openState.has(key) ? openState.get(key) : defaultOpen;
    return `<details class="block ${cls}" data-key="${esc(key)}"${open ? " open" : ""}><summary>${summary}</summary>${body}</details>`;
  }

  function renderMessage(m) {
    let el = elOf.get(m.id);
    if (!el) { el = document.createElement("div"); el.dataset.id = m.id; elOf.set(m.id, el); }
    el.className = `msg ${m.role}${m.streaming ? " streaming" : ""}`;
    if (m.role === "user") { el.innerHTML = `<div class="text">${esc(m.parts.map((p) => p.text || "").join(""))}</div>`; return el; }
    const html = [];
    const hasText = m.parts.some((p) => p.type === "text" && p.text);
    for (const p of m.parts) {
      if (p.type === "text") html.push(`<div class="text">${esc(p.text)}</div>`);
      else if (p.type === "reasoning") {
        const live = p.state === "streaming" && !hasText;
        html.push(details("r:" + m.id + p.id, "reasoning verbose-only", `Reasoning${p.state === "streaming" ? " …" : ""}`, `<pre>${esc(p.text)}</pre>`, live));
      } else if (p.type === "dynamic-tool") {
        const st = { "input-streaming": "running", "input-available": "running", "output-available": "ok", "output-error": "error" }[p.state] || "running";
        const dur = p.t1 && p.t0 ? ` ${fmt((p.t1 - p.t0) / 1000)}` : "";
        const args = p.input !== undefined ? json(p.input) : esc(p.rawInput || "");
        let out = "";
        if (p.state === "output-available") out = `<div>Result</div><pre>${json(p.output)}</pre>`;
        if (p.state === "output-error") out = `<div class="errtext">Error: ${esc(p.errorText)}</div>`;
        html.push(details("t:" + p.toolCallId, "tool verbose-only", `Tool <b>${esc(p.toolName)}</b><span class="badge ${st}" title="from the first argument streamed to the result">${st}${dur}</span>`, `<div>Arguments</div><pre>${args}</pre>${out}`, false));
      } else if (p.type === "data-run") {
        const d = p.data || {};
        if (d.parentId && d.kind !== "llm" && d.kind !== "tool") {
          html.push(`<div class="verbose-only note">step <b>${esc(d.name)}</b> <span class="badge ${esc(d.status)}">${esc(d.status)}${d.duration != null ? " " + fmt(d.duration) : ""}</span></div>`);
        }
      } else if (p.type === "data-interrupt") html.push(renderInterrupt(m, p));
      else if (p.type.startsWith("data-")) {
        html.push(details("d:" + m.id + (p.id || m.parts.indexOf(p)), "data verbose-only", esc(p.type.slice(5)), `<pre>${json(p.data)}</pre>`, false));
      }
    }
    if (m.aborted) html.push(`<div class="note stopped">Stopped${m.aborted && m.aborted !== "stop request" ? ": " + esc(m.aborted) : ""}.</div>`);
    if (m.error) html.push(`<div class="note error">Error: ${esc(m.error)}</div>`);
    if (m.streaming && !hasText && !m.parts.some((p) => p.type === "data-interrupt")) html.push(`<div class="note">thinking…</div>`);
    el.innerHTML = html.join("");
    return el;
  }

  function interruptInfo(d) {
    const entry = (d.interrupts && d.interrupts[0]) || {};
    const payload = entry.payload !== undefined ? entry.payload : d.payload !== undefined ? d.payload : d.value;
    const schema = entry.schema || d.schema || null;
    const q = (payload && typeof payload === "object" && (payload.question || payload.message || payload.prompt)) ||
      (typeof payload === "string" ? payload : d.question || d.message || "The run is waiting for your answer.");
    const opts = (payload && typeof payload === "object" && (payload.options || payload.choices)) || d.options || null;
    return { payload, schema, q, opts };
  }
  // An answer shaped by the interrupt's JSON schema: a boolean, or an object's first boolean/string field.
  function shaped(schema, value) {
    if (!schema) return value;
    if (schema.type === "object" && schema.properties) {
      const want = typeof value === "boolean" ? "boolean" : "string";
      const key = Object.keys(schema.properties).find((k) => schema.properties[k].type === want);
      if (key) return { [key]: value };
    }
    return value;
  }

  function renderInterrupt(m, p) {
    const { payload, q, opts } = interruptInfo(p.data || {});
    const answered = m.answered;
    let controls;
    if (answered !== undefined) controls = `<div class="muted">Answered: ${esc(typeof answered === "string" ? answered : JSON.stringify(answered))}</div>`;
    else if (Array.isArray(opts) && opts.length) controls = `<div class="row">${opts.map((o, i) => `<button type="button" class="small" data-answer-index="${i}">${esc(typeof o === "string" ? o : o.label || JSON.stringify(o))}</button>`).join("")}</div>`;
    else controls = `<div class="row"><button type="button" class="small" data-answer="approve">Approve</button><button type="button" class="small deny" data-answer="deny">Deny</button>
      <input type="text" class="answer-text" placeholder="…or type an answer" aria-label="Answer"><button type="button" class="small" data-answer="text">Answer</button></div>`;
    const detail = payload && typeof payload === "object" ? `<pre class="mono verbose-only">${json(payload)}</pre>` : "";
    return `<div class="interrupt" data-msg="${esc(m.id)}"><div class="q">${esc(q)}</div>${detail}${controls}</div>`;
  }

  function answerInterrupt(msgId, value, label) {
    const m = messages.find((x) => x.id === msgId);
    if (!m || busy) return;
    m.answered = label;
    renderAll();
    submit(label, value);
  }

  els.messages.addEventListener("click", (e) => {
    const b = e.target.closest("button"); const box = e.target.closest(".interrupt");
    if (!b || !box) return;
    const m = messages.find((x) => x.id === box.dataset.msg);
    const p = m && m.parts.find((q) => q.type === "data-interrupt");
    const { schema, opts } = interruptInfo((p && p.data) || {});
    if (b.dataset.answerIndex !== undefined) {
      const o = (opts || [])[+b.dataset.answerIndex];
      const value = typeof o === "object" && o !== null && "value" in o ? o.value : o;
      answerInterrupt(box.dataset.msg, value, typeof o === "string" ? o : (o.label || JSON.stringify(value)));
    } else if (b.dataset.answer === "approve") answerInterrupt(box.dataset.msg, shaped(schema, true), "approved");
    else if (b.dataset.answer === "deny") answerInterrupt(box.dataset.msg, shaped(schema, false), "denied");
    else if (b.dataset.answer === "text") {
      const v = box.querySelector(".answer-text").value.trim();
      if (v) answerInterrupt(box.dataset.msg, shaped(schema, v), v);
    }
  });
  els.messages.addEventListener("click", (e) => { // remember what the user opened or closed (re-renders keep it)
    const s = e.target.closest("summary");
    const d = s && s.parentElement;
    if (d && d.dataset.key) openState.set(d.dataset.key, !d.open);
  });

  function renderAll() {
    const frag = document.createDocumentFragment();
    const keep = new Set(messages.map((m) => m.id));
    for (const id of [...elOf.keys()]) if (!keep.has(id)) elOf.delete(id);
    for (const m of messages) frag.appendChild(renderMessage(m));
    els.messages.replaceChildren(frag);
    renderWaterfall();
    scrollDown();
  }

  let pending = new Set(); let frame = 0;
  function schedule(msg) {
    if (msg) pending.add(msg);
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      for (const m of pending) { const el = renderMessage(m); if (!el.isConnected) els.messages.appendChild(el); }
      pending = new Set();
      renderWaterfall(); save(false); scrollDown();
    });
  }
  function scrollDown() {
    const box = els.messages;
    if (box.scrollHeight - box.scrollTop - box.clientHeight < 160) box.scrollTop = box.scrollHeight;
  }

  function renderWaterfall() {
    const last = [...messages].reverse().find((m) => m.role === "assistant" && m.parts.some((p) => p.type === "data-run"));
    if (!last) { els.total.textContent = ""; return; }
    const runs = last.parts.filter((p) => p.type === "data-run").map((p) => p.data);
    const now = Date.now() / 1000;
    const byId = new Map(runs.map((r) => [r.runId, r]));
    const t0 = Math.min(...runs.map((r) => r.startedAt || now));
    const end = (r) => (r.duration != null ? (r.startedAt || t0) + r.duration : Math.max(now, r.startedAt || t0));
    const t1 = Math.max(...runs.map(end), t0 + 0.001);
    const span = t1 - t0;
    const kids = new Map();
    for (const r of runs) { const k = byId.has(r.parentId) ? r.parentId : null; if (!kids.has(k)) kids.set(k, []); kids.get(k).push(r); }
    const order = []; const walk = (k, depth) => { for (const r of (kids.get(k) || []).sort((a, b) => a.startedAt - b.startedAt)) { order.push([r, depth]); walk(r.runId, depth + 1); } };
    walk(null, 0);
    els.total.textContent = `${runs.length} runs · ${fmt(span)}`;
    els.waterfall.innerHTML = order.map(([r, depth]) => {
      const left = ((r.startedAt || t0) - t0) / span * 100;
      const width = Math.max(0.3, (end(r) - (r.startedAt || t0)) / span * 100);
      const ttft = r.ttft != null ? `<div class="ttft" title="time to first token ${fmt(r.ttft)}" style="left:${left + r.ttft / span * 100}%"></div>` : "";
      const title = `${r.name} (${r.kind}) ${r.status}${r.duration != null ? " · " + fmt(r.duration) : ""}${r.ttft != null ? " · TTFT " + fmt(r.ttft) : ""}${r.error ? " · " + r.error : ""}`;
      const mark = { error: " ✖", cancelled: " ■", interrupted: " ⏸" }[r.status] || "";
      return `<div class="row" data-status="${esc(r.status)}" title="${esc(title)}"><div class="label" style="padding-left:${depth * 10}px">${esc(r.name)}${mark} <span class="kind">${esc(r.kind)}</span></div>` +
        `<div class="track"><div class="bar k-${esc(r.kind)} ${esc(r.status)}" style="left:${left}%;width:${Math.min(width, 100 - left)}%"></div>${ttft}` +
        `<span class="dur">${r.duration != null ? fmt(r.duration) : "…"}${r.ttft != null ? " · ttft " + fmt(r.ttft) : ""}</span></div></div>`;
    }).join("");
  }
  setInterval(() => { if (busy) renderWaterfall(); }, 250);

  function setBusy(b) {
    busy = b;
    els.send.hidden = b; els.stop.hidden = !b; els.stop.disabled = false;
    if (!b) setTimeout(() => els.input.focus(), 0);
  }
  function setStatus(text, error) { els.status.textContent = text; els.status.style.color = error ? "var(--err)" : ""; }

  // -- wiring ---------------------------------------------------------------------
  els.form.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = els.input.value.trim();
    if (!text || busy) return;
    els.input.value = "";
    const pendingInterrupt = [...messages].reverse().find((m) => m.role === "assistant");
    const waiting = pendingInterrupt && pendingInterrupt.finishReason === "other" && pendingInterrupt.parts.some((p) => p.type === "data-interrupt") && pendingInterrupt.answered === undefined;
    if (waiting) pendingInterrupt.answered = text;
    const ip = waiting && pendingInterrupt.parts.find((p) => p.type === "data-interrupt");
    submit(text, waiting ? shaped(interruptInfo(ip.data || {}).schema, text) : undefined);
  });
  els.input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); els.form.requestSubmit(); }
  });
  els.stop.addEventListener("click", stop);
  els.verbose.addEventListener("change", () => {
    document.body.classList.toggle("verbose", els.verbose.checked);
    store.setItem(KEY + ".verbose", els.verbose.checked ? "1" : "0");
  });
  els.stream.addEventListener("change", () => store.setItem(KEY + ".stream", els.stream.checked ? "1" : "0"));
  els.newChat.addEventListener("click", () => {
    if (busy) return;
    chatId = rid(); messages = []; openState.clear(); save(true); renderAll();
    els.waterfall.innerHTML = '<p class="muted">Runs of the last answer appear here, live.</p>';
    setStatus("");
  });

  load();
  renderAll();
  resumeOnLoad();
})();
