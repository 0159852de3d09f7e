// Runs streamtap's AG-UI endpoint through the real AG-UI client (`@ag-ui/client` HttpAgent):
// it parses the SSE, validates every event against the protocol's schema, enforces the
// verifier's ordering rules, and rebuilds the thread's messages and pending interrupts.
// Usage: node agui_conformance.mjs '<json>' with {url, threadId, steps: [{text?, answer?, stopAfter?, abortAfter?}]}
//   answer: resolve every pending interrupt of the previous run with this payload.
//   stopAfter / abortAfter: an event type; when it first arrives, POST {url}/{threadId}/stop or abortRun().
// Prints one JSON line: [{events, messages, pendingInterrupts, errors, outcome}] per step (one agent: one thread).
import { HttpAgent } from "@ag-ui/client";

const { url, threadId, steps } = JSON.parse(process.argv[2]);
const agent = new HttpAgent({ url, threadId });
const results = [];
let n = 0;
for (const step of steps) {
  const events = [];
  const errors = [];
  let outcome = null;
  let acted = false;
  if (step.text !== undefined) {
    agent.addMessage({ id: `u${++n}`, role: "user", content: step.text });
  }
  const subscriber = {
    onEvent({ event }) {
      events.push(event);
      if (!acted && step.stopAfter === event.type) {
        acted = true;
        fetch(`${url}/${threadId}/stop`, { method: "POST" }).catch((e) => errors.push("stop: " + e.message));
      }
      if (!acted && step.abortAfter === event.type) {
        acted = true;
        setTimeout(() => agent.abortRun(), 0);
      }
    },
    onRunFinishedEvent(params) { outcome = params.outcome; },
    onRunErrorEvent({ event }) { errors.push("RUN_ERROR: " + event.message); },
    onRunFailed({ error }) { errors.push("failed: " + (error && error.message || String(error))); },
  };
  try {
    const resume = step.answer === undefined ? undefined
      : agent.pendingInterrupts.map((i) => ({ interruptId: i.id, status: "resolved", payload: step.answer }));
    await agent.runAgent({ runId: `r${results.length}`, resume, forwardedProps: step.forwardedProps }, subscriber);
  } catch (e) {
    errors.push(String(e && e.message || e));
  }
  results.push({ events, messages: agent.messages, pendingInterrupts: agent.pendingInterrupts, errors, outcome });
}
process.stdout.write(JSON.stringify(results) + "\n");
