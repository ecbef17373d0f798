// Verifies webhook deliveries with the official Standard Webhooks library (an implementation
// independent of ours). Reads one JSON object a line on stdin: {secret, id, timestamp,
// signature, body}; writes one a line: {ok: true, type} or {ok: false, error}.
import { Webhook } from "standardwebhooks";
import { createInterface } from "node:readline";

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  const d = JSON.parse(line);
  try {
    const payload = new Webhook(d.secret).verify(d.body, {
      "webhook-id": d.id,
      "webhook-timestamp": d.timestamp,
      "webhook-signature": d.signature,
    });
    console.log(JSON.stringify({ ok: true, type: payload.type }));
  } catch (e) {
    console.log(JSON.stringify({ ok: false, error: String(e && e.message ? e.message : e) }));
  }
}
