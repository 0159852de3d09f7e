// Feeds streamtap's real HTTP responses through the real Vercel AI SDK (`ai` v6):
// DefaultChatTransport (POST /api/chat, GET /api/chat/{id}/stream) parses and validates
// every chunk against the SDK's schema, and readUIMessageStream builds the UIMessage.
// Usage: node ui_conformance.mjs '<json>' with {api, steps: [{kind: "send"|"send-then-stop"|"reconnect", chatId, text?, body?}]}
// "send-then-stop" aborts the fetch after the first text delta, as useChat's stop() does (status "stopped").
// Prints one JSON line: [{chunks, message, errors, status}] per step.
import { DefaultChatTransport, readUIMessageStream } from "ai";

const { api, steps } = JSON.parse(process.argv[2]);
const transport = new DefaultChatTransport({ api });
const results = [];
for (const step of steps) {
  const errors = [];
  const chunks = [];
  let message = null;
  let status = "ok";
  const controller = new AbortController();
  try {
    const stream = step.kind !== "reconnect"
      ? await transport.sendMessages({
          chatId: step.chatId,
          trigger: "submit-message",
          messageId: undefined,
          messages: [{ id: "u1", role: "user", parts: [{ type: "text", text: step.text }] }],
          abortSignal: controller.signal,
          body: step.body || {},
        })
      : await transport.reconnectToStream({ chatId: step.chatId });
    if (stream === null) {
      status = "no-stream"; // HTTP 204
    } else {
      const recorded = stream.pipeThrough(new TransformStream({ transform(c, ctl) { chunks.push(c); ctl.enqueue(c); } }));
      for await (const m of readUIMessageStream({ stream: recorded, onError: (e) => errors.push(String(e && e.message || e)) })) {
        message = m;
        if (step.kind === "send-then-stop" && chunks.some((c) => c.type === "text-delta")) {
          controller.abort(); // what useChat's stop() does: the fetch is aborted, the server sees a disconnect
          status = "stopped";
          break;
        }
      }
    }
  } catch (e) {
    errors.push(String(e && e.message || e));
    status = "error";
  }
  results.push({ status, chunks, message, errors });
}
process.stdout.write(JSON.stringify(results) + "\n");
