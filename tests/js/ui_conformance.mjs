// Feeds streamtap's real HTTP responses through the real Vercel AI SDK (`ai` v6):
// DefaultChatTransport (POST /api/chat, GET /api/chat/{id}/stream) parses and validates
// every chunk against the SDK's schema, and readUIMessageStream builds the UIMessage.
// Usage: node ui_conformance.mjs '<json>' with {api, steps: [{kind: "send"|"reconnect", chatId, text?, body?}]}
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
  try {
    const stream = step.kind === "send"
      ? await transport.sendMessages({
          chatId: step.chatId,
          trigger: "submit-message",
          messageId: undefined,
          messages: [{ id: "u1", role: "user", parts: [{ type: "text", text: step.text }] }],
          abortSignal: undefined,
          body: step.body || {},
        })
      : await transport.reconnectToStream({ chatId: step.chatId });
    if (stream === null) {
      status = "no-stream"; // HTTP 204
    } else {
      const recorded = stream.pipeThrough(new TransformStream({ transform(c, ctl) { chunks.push(c); ctl.enqueue(c); } }));
      for await (const m of readUIMessageStream({ stream: recorded, onError: (e) => errors.push(String(e && e.message || e)) })) {
        message = m;
      }
    }
  } catch (e) {
    errors.push(String(e && e.message || e));
    status = "error";
  }
  results.push({ status, chunks, message, errors });
}
process.stdout.write(JSON.stringify(results) + "\n");
