// streamtap built-in chat page: plain JS, no build step.
// Speaks the Vercel AI SDK UI message stream v1 (the same stream useChat reads),
// resumes a running answer after a reload (GET api/chat/{id}/stream replays it),
// stops runs server-side (POST api/chat/{id}/stop), answers interrupts, and draws
// a live waterfall of the run tree from the data-run parts. Answers are markdown, rendered with the
// vendored marked and sanitised with the vendored DOMPurify (static/vendor, with their licences).
// /?run=<run id> is a read-only view of one run (GET api/runs/{id}/ui): a replay, a shared link.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const els = {
    messages: $("messages"), input: $("input"), form: $("composer"), send: $("send"), stop: $("stop"),
    status: $("status"), stream: $("opt-stream"), verbose: $("opt-verbose"), newChat: $("new-chat"),
    waterfall: $("waterfall"), total: $("trace-total"), trace: $("trace"), traceToggle: $("trace-toggle"),
    traceLink: $("trace-link"), readonly: $("readonly"),
  };
  const viewRun = new URLSearchParams(location.search).get("run"); // the read-only view of one run
  const traceUrl = (document.querySelector('meta[name="streamtap-trace-url"]') || {}).content || "";
  const store = window.localStorage;
  const KEY = "streamtap.chat";
  const token = (new URLSearchParams(location.hash.slice(1))).get("token") || sessionStorage.getItem("streamtap.token");
  if (token) sessionStorage.setItem("streamtap.token", token);

  let chatId = null;
  let messages = [];
  let busy = false;
  let stopped = false;
  let editing = null; // id of the user message being edited
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
    els.verbose.checked = store.getItem(KEY + ".verbose") === "1";
    els.stream.checked = store.getItem(KEY + ".stream") !== "0";
    document.body.classList.toggle("verbose", els.verbose.checked);
    if (viewRun) { chatId = null; return; } // read-only: the saved chat is left alone
    try {
      const saved = JSON.parse(store.getItem(KEY) || "null");
      if (saved && saved.chatId) { chatId = saved.chatId; messages = saved.messages || []; }
    } catch (_) { /* a corrupt entry starts a new chat */ }
    if (!chatId) chatId = rid();
  }
  let saveTimer = null;
  function save(now) {
    if (viewRun) return;
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
          if (c.type === "data-run" && c.data && c.data.kind === "tool" && !parts.some((q) => q.runId === c.data.runId)) {
            // A tool's execution is a child run, started right after the model asked for it: the first
            // call of that name without a run is this one. Its duration is the one badge and waterfall show.
            const call = parts.find((q) => q.type === "dynamic-tool" && q.toolName === c.data.name && !q.runId);
            if (call) call.runId = c.data.runId;
          }
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
        if (viewRun && msg.metadata.input && !messages.some((m) => m.role === "user")) {
          messages.unshift({ id: "input-" + id, role: "user", parts: [{ type: "text", text: msg.metadata.input }] });
          renderAll();
        }
        setStatus(replay === "resume" ? "Resumed the running answer." : replay === "view" ? "Showing the run…" : "");
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

  function post(trigger, resumeValue, messageId) {
    // The recent turns only: a long chat must not outgrow the server's body and message limits.
    const body = { id: chatId, messages: messages.slice(-100).map(wire), trigger, verbose: true, stream: els.stream.checked };
    if (messageId) body.messageId = messageId;
    if (resumeValue !== undefined) body.resume = resumeValue;
    return run(() => fetch("api/chat", { method: "POST", headers: headers(true), body: JSON.stringify(body) }), false);
  }

  async function submit(text, resumeValue) {
    if (busy) return;
    const user = { id: rid(), role: "user", parts: [{ type: "text", text }] };
    messages.push(user);
    renderAll(); save(true);
    await post("submit-message", resumeValue);
  }

  // Regenerate (or retry after an error/stop): drop the last answer, ask again for the last user message.
  async function regenerate() {
    if (busy) return;
    const lastUser = messages.map((m) => m.role).lastIndexOf("user");
    if (lastUser < 0) return;
    const dropped = messages.slice(lastUser + 1).find((m) => m.role === "assistant");
    messages = messages.slice(0, lastUser + 1);
    renderAll(); save(true);
    await post("regenerate-message", undefined, dropped && dropped.id);
  }

  // Edit the last user message: it and everything after it are replaced by the edited question.
  async function resubmitEdited(id, text) {
    if (busy) return;
    const at = messages.findIndex((m) => m.id === id);
    if (at < 0 || !text) return;
    messages = messages.slice(0, at);
    editing = null;
    await submit(text);
  }

  async function run(request, replay) {
    setBusy(true); stopped = false;
    setStatus(""); renderAll(); // the actions (edit, regenerate) go while a request runs
    let failed = false;
    try {
      const res = await request();
      if (res.status === 204) return;
      if (!res.ok) {
        let err = res.status + " " + res.statusText;
        try { err = (await res.json()).error || err; } catch (_) { /* not JSON */ }
        failed = true;
        lastFailure = err;
        setStatus("Error: " + err, true);
        return;
      }
      await consume(res, replay);
    } catch (e) {
      failed = !stopped;
      setStatus(stopped ? "" : "Connection lost: " + e.message + ". Reload to resume.", !stopped);
    } finally {
      // Progress lines ("Stopping…", "Resumed the running answer.") end with the answer; errors stay.
      if (!failed) { setStatus(""); lastFailure = null; }
      setBusy(false);
      renderAll();
    }
  }
  let lastFailure = null; // a request the server refused: the last user message gets a Retry

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
    await run(async () => { const r = await fetch(base, { headers: headers(false) }); got = r.status !== 204; return r; }, "resume");
    // An answer that was streaming when the page went away and has finished since: fetch it whole.
    const last = [...messages].reverse().find((m) => m.role === "assistant");
    if (!got && last && last.streaming && last.metadata && last.metadata.runId) {
      await run(() => fetch(`${base}?run=${encodeURIComponent(last.metadata.runId)}`, { headers: headers(false) }), "resume");
    }
    for (const m of messages) if (m.streaming) { m.streaming = false; m.error = m.error || "The answer was interrupted and can no longer be fetched."; }
    if (els.status.textContent.startsWith("Checking")) setStatus("");
    renderAll(); save(true);
  }

  async function showRun(runId) { // the read-only view: one run, replayed then live
    els.form.hidden = true; els.newChat.hidden = true;
    els.readonly.hidden = false;
    els.readonly.textContent = `Read-only view of run ${runId}.`;
    const res = await fetch(`api/runs/${encodeURIComponent(runId)}/ui`, { headers: headers(false) }).catch((e) => e);
    if (!(res instanceof Response)) { setStatus("Connection lost: " + res.message, true); return; }
    if (!res.ok) {
      let err = res.status + " " + res.statusText;
      try { err = (await res.json()).error || err; } catch (_) { /* not JSON */ }
      setStatus("Error: " + err, true);
      return;
    }
    await run(async () => res, "view");
  }

  // -- rendering -----------------------------------------------------------------
  const esc = (s) => String(s).replace(/[&<>"]/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[ch]));
  const json = (v) => esc(typeof v === "string" ? v : JSON.stringify(v, null, 2));
  const fmt = (s) => (s == null ? "" : s < 1 ? Math.round(s * 1000) + " ms" : s.toFixed(2) + " s");
  const tokens = (u) => (u && (u.input_tokens != null || u.output_tokens != null) ? `${u.input_tokens || 0} in · ${u.output_tokens || 0} out` : "");

  // Markdown, made inert: raw HTML in an answer is shown as text, images become links (an answer must not
  // make the browser fetch a URL), and DOMPurify removes whatever is left that could run (on* attributes,
  // javascript: URLs). Links open in a new tab without access to this page.
  const md = window.marked && new window.marked.Marked({ gfm: true, breaks: true, renderer: {
    html(token) { return esc(token.text || token.raw || ""); },
    image(token) { return `<a href="${esc(token.href || "")}">${esc(token.text || token.href || "image")}</a>`; },
  } });
  const purify = window.DOMPurify;
  if (purify) {
    purify.addHook("afterSanitizeAttributes", (node) => {
      if (node.tagName === "A") { node.setAttribute("target", "_blank"); node.setAttribute("rel", "noopener noreferrer nofollow"); }
    });
  }
  const mdCache = new Map();
  function markdown(text) {
    if (!md || !purify) return esc(text); // the vendor files failed to load: plain text, still safe
    const hit = mdCache.get(text);
    if (hit !== undefined) return hit;
    const html = purify.sanitize(md.parse(String(text)), { FORBID_TAGS: ["style", "form", "input", "button", "img", "svg", "math", "iframe"], FORBID_ATTR: ["style"] }).trim();
    if (mdCache.size > 200) mdCache.clear();
    mdCache.set(text, html);
    return html;
  }
  const runOf = (m, runId) => m.parts.find((p) => p.type === "data-run" && p.data && p.data.runId === runId);
  const traceHref = (m) => {
    const tid = m.metadata && m.metadata.traceId;
    if (!traceUrl || !tid) return "";
    return traceUrl.replaceAll("{trace_id}", encodeURIComponent(tid)).replaceAll("{run_id}", encodeURIComponent(m.metadata.runId || ""));
  };
  const answerText = (m) => m.parts.filter((p) => p.type === "text").map((p) => p.text).join("\n\n");

  function details(key, cls, summary, body, defaultOpen) {
    const open = openState.has(key) ? openState.get(key) : defaultOpen;
    return `<details class="block ${cls}" data-key="${esc(key)}"${open ? " open" : ""}><summary>${summary}</summary>${body}</details>`;
  }

  function renderMessage(m) {
    let el = elOf.get(m.id);
    if (!el) { el = document.createElement("div"); el.dataset.id = m.id; elOf.set(m.id, el); }
    el.className = `msg ${m.role}${m.streaming ? " streaming" : ""}`;
    if (m.role === "user") {
      const text = m.parts.map((p) => p.text || "").join("");
      const lastUser = [...messages].reverse().find((x) => x.role === "user");
      const isLast = lastUser && lastUser.id === m.id;
      if (editing === m.id) {
        el.innerHTML = `<form class="edit-box"><textarea class="edit-text" rows="3" aria-label="Edit message">${esc(text)}</textarea>` +
          `<div class="actions"><button type="submit" class="save-edit">Send</button><button type="button" class="cancel-edit">Cancel</button></div></form>`;
        return el;
      }
      let acts = "";
      if (isLast && !busy && !viewRun) {
        acts = `<div class="actions"><button type="button" class="edit" title="Edit this message and ask again">Edit</button>` +
          (lastFailure && messages[messages.length - 1] === m ? `<button type="button" class="retry" title="Send it again">Retry</button>` : "") + `</div>`;
      }
      el.innerHTML = `<div class="text">${esc(text)}</div>${acts}`;
      return el;
    }
    const html = [];
    const hasText = m.parts.some((p) => p.type === "text" && p.text);
    for (const p of m.parts) {
      if (p.type === "text") html.push(`<div class="text md">${markdown(p.text)}</div>`);
      else if (p.type === "reasoning") {
        const live = p.state === "streaming" && !hasText;
        html.push(details("r:" + m.id + p.id, "reasoning verbose-only", `Reasoning${p.state === "streaming" ? " …" : ""}`, `<pre>${esc(p.text)}</pre>`, live));
      } else if (p.type === "dynamic-tool") {
        const st = { "input-streaming": "running", "input-available": "running", "output-available": "ok", "output-error": "error" }[p.state] || "running";
        // One duration per tool: its execution run's, as in the waterfall (the browser's clock is not used).
        const r = p.runId && runOf(m, p.runId);
        const secs = r && r.data.duration != null ? r.data.duration : null;
        const dur = secs != null ? ` ${fmt(secs)}` : "";
        const args = p.input !== undefined ? json(p.input) : esc(p.rawInput || "");
        let out = "";
        if (p.state === "output-available") out = `<div>Result</div><pre>${json(p.output)}</pre>`;
        if (p.state === "output-error") out = `<div class="errtext">Error: ${esc(p.errorText)}</div>`;
        html.push(details("t:" + p.toolCallId, "tool verbose-only", `Tool <b>${esc(p.toolName)}</b><span class="badge ${st}" data-run-id="${esc(p.runId || "")}" title="the tool's run, as in the waterfall">${st}${dur}</span>`, `<div>Arguments</div><pre>${args}</pre>${out}`, false));
      } else if (p.type === "data-run") {
        const d = p.data || {};
        if (d.parentId && d.kind !== "llm" && d.kind !== "tool") {
          html.push(`<div class="verbose-only note">step <b>${esc(d.name)}</b> <span class="badge ${esc(d.status)}">${esc(d.status)}${d.duration != null ? " " + fmt(d.duration) : ""}</span></div>`);
        }
      } else if (p.type === "data-interrupt") html.push(renderInterrupt(m, p));
      else if (p.type === "data-progress" && p.data && typeof p.data.done === "number") {
        const d = p.data, total = typeof d.total === "number" && d.total > 0 ? d.total : null;
        html.push(`<div class="progress"><progress${total ? ` max="${total}" value="${Math.min(d.done, total)}"` : ""}></progress> ${esc(String(d.done))}${total ? "/" + esc(String(total)) : ""}</div>`);
      } else if (p.type.startsWith("data-")) {
        html.push(details("d:" + m.id + (p.id || m.parts.indexOf(p)), "data verbose-only", esc(p.type.slice(5)), `<pre>${json(p.data)}</pre>`, false));
      }
    }
    if (m.aborted) html.push(`<div class="note stopped">Stopped${m.aborted && m.aborted !== "stop request" ? ": " + esc(m.aborted) : ""}.</div>`);
    if (m.error) html.push(`<div class="note error">Error: ${esc(m.error)}</div>`);
    if (m.streaming && !hasText && !m.parts.some((p) => p.type === "data-interrupt")) html.push(`<div class="note">thinking…</div>`);
    if (!m.streaming) {
      const last = messages[messages.length - 1] === m;
      const acts = [];
      if (hasText) acts.push(`<button type="button" class="copy" title="Copy the answer (markdown)">Copy</button>`);
      if (last && !busy && !viewRun && messages.some((x) => x.role === "user")) {
        if (m.error || m.aborted) acts.push(`<button type="button" class="retry" title="Ask again">Retry</button>`);
        else if (m.finishReason !== "other") acts.push(`<button type="button" class="regenerate" title="Ask again for a new answer">Regenerate</button>`);
      }
      const href = traceHref(m);
      if (href) acts.push(`<a class="trace-link" href="${esc(href)}" target="_blank" rel="noopener noreferrer">Trace ↗</a>`);
      const root = m.metadata && m.metadata.runId && runOf(m, m.metadata.runId);
      const total = m.parts.filter((p) => p.type === "data-run" && p.data && p.data.kind === "llm" && p.data.usage).reduce((a, p) => ({ input_tokens: a.input_tokens + (p.data.usage.input_tokens || 0), output_tokens: a.output_tokens + (p.data.usage.output_tokens || 0) }), { input_tokens: 0, output_tokens: 0 });
      const tk = total.input_tokens || total.output_tokens ? tokens(total) + " tokens" : "";
      if (tk || (root && root.data.duration != null)) acts.push(`<span class="usage verbose-only">${[tk, root && root.data.duration != null ? fmt(root.data.duration) : ""].filter(Boolean).join(" · ")}</span>`);
      if (acts.length) html.push(`<div class="actions">${acts.join("")}</div>`);
    }
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
  async function copyText(text) {
    try { await navigator.clipboard.writeText(text); return true; } catch (_) { /* no clipboard permission: the old way */ }
    const ta = document.createElement("textarea");
    ta.value = text; ta.setAttribute("readonly", ""); ta.style.position = "fixed"; ta.style.opacity = "0";
    document.body.appendChild(ta); ta.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (_) { ok = false; }
    ta.remove();
    return ok;
  }
  els.messages.addEventListener("click", async (e) => { // copy, regenerate, retry, edit
    const b = e.target.closest("button");
    const box = b && b.closest(".msg");
    if (!b || !box || b.closest(".interrupt")) return;
    const m = messages.find((x) => x.id === box.dataset.id);
    if (!m) return;
    if (b.classList.contains("copy")) {
      const ok = await copyText(answerText(m));
      b.textContent = ok ? "Copied" : "Copy failed";
      setTimeout(() => { if (b.isConnected) b.textContent = "Copy"; }, 1500);
    } else if (b.classList.contains("regenerate") || b.classList.contains("retry")) regenerate();
    else if (b.classList.contains("edit")) {
      editing = m.id; renderAll();
      const ta = box.querySelector(".edit-text");
      if (ta) { ta.focus(); ta.setSelectionRange(ta.value.length, ta.value.length); }
    } else if (b.classList.contains("cancel-edit")) { editing = null; renderAll(); }
  });
  els.messages.addEventListener("submit", (e) => {
    const f = e.target.closest(".edit-box"); const box = f && f.closest(".msg");
    if (!f || !box) return;
    e.preventDefault();
    resubmitEdited(box.dataset.id, f.querySelector(".edit-text").value.trim());
  });
  els.messages.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && e.target.classList.contains("edit-text")) { e.preventDefault(); e.target.form.requestSubmit(); }
    if (e.key === "Escape" && e.target.classList.contains("edit-text")) { editing = null; renderAll(); }
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
    if (!last) { els.total.textContent = ""; els.traceLink.hidden = true; els.traceToggle.textContent = "Run tree"; return; }
    const href = traceHref(last);
    els.traceLink.hidden = !href;
    if (href) els.traceLink.href = href;
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
    els.traceToggle.textContent = `Run tree (${runs.length})`;
    els.waterfall.innerHTML = order.map(([r, depth]) => {
      const left = ((r.startedAt || t0) - t0) / span * 100;
      const width = Math.max(0.3, (end(r) - (r.startedAt || t0)) / span * 100);
      const ttft = r.ttft != null ? `<div class="ttft" title="time to first token ${fmt(r.ttft)}" style="left:${left + r.ttft / span * 100}%"></div>` : "";
      const title = `${r.name} (${r.kind}) ${r.status}${r.duration != null ? " · " + fmt(r.duration) : ""}${r.ttft != null ? " · TTFT " + fmt(r.ttft) : ""}${r.error ? " · " + r.error : ""}`;
      const mark = { error: " ✖", cancelled: " ■", interrupted: " ⏸" }[r.status] || "";
      const tk = tokens(r.usage);
      return `<div class="row" data-run-id="${esc(r.runId)}" data-kind="${esc(r.kind)}" data-status="${esc(r.status)}" title="${esc(title + (tk ? " · " + tk + " tokens" : ""))}"><div class="label" style="padding-left:${depth * 10}px">${esc(r.name)}${mark} <span class="kind">${esc(r.kind)}</span></div>` +
        `<div class="track"><div class="bar k-${esc(r.kind)} ${esc(r.status)}" style="left:${left}%;width:${Math.min(width, 100 - left)}%"></div>${ttft}</div>` +
        `<div class="dur"><span class="secs">${r.duration != null ? fmt(r.duration) : "…"}</span>${r.ttft != null ? " · ttft " + fmt(r.ttft) : ""}${tk ? `<span class="tokens">${esc(tk)} tok</span>` : ""}</div></div>`;
    }).join("");
  }
  setInterval(() => { if (busy) renderWaterfall(); }, 250);

  function setBusy(b) {
    busy = b;
    els.send.hidden = b; els.stop.hidden = !b; els.stop.disabled = false;
    if (!b) setTimeout(() => els.input.focus(), 0);
  }
  function setStatus(text, error) { els.status.textContent = text; els.status.classList.toggle("error", !!error); }

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
  els.traceToggle.addEventListener("click", () => {
    const open = !els.trace.classList.contains("open");
    els.trace.classList.toggle("open", open);
    els.traceToggle.setAttribute("aria-expanded", open ? "true" : "false");
  });
  els.newChat.addEventListener("click", () => {
    if (busy) return;
    chatId = rid(); messages = []; openState.clear(); editing = null; lastFailure = null; save(true); renderAll();
    els.waterfall.innerHTML = '<p class="muted">Runs of the last answer appear here, live.</p>';
    setStatus("");
  });

  load();
  renderAll();
  if (viewRun) showRun(viewRun); else resumeOnLoad();
})();
