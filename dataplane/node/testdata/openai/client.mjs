// A real OpenAI client (the official SDK for Node) calling a model through a tunnel: the tunnel's
// access key rides in X-Tunnel-Key, the SDK's own API key in Authorization, for the upstream.
// Prints one JSON line per streamed chunk ({"content", "at_ms"}), or one line {"error": …} with
// what the SDK made of a refusal.
import OpenAI from "openai";

const client = new OpenAI({
  apiKey: process.env.UPSTREAM_KEY,
  baseURL: process.env.OPENAI_BASE_URL,
  defaultHeaders: { "X-Tunnel-Key": process.env.TUNNEL_KEY },
  maxRetries: 0,
});
try {
  const stream = await client.chat.completions.create({
    model: "demo",
    messages: [{ role: "user", content: "count" }],
    stream: true,
  });
  for await (const chunk of stream) {
    const content = chunk.choices[0]?.delta?.content ?? "";
    process.stdout.write(JSON.stringify({ content, at_ms: Date.now() }) + "\n");
  }
} catch (e) {
  process.stdout.write(JSON.stringify({ error: { status: e.status, message: e.message, code: e.code, type: e.type } }) + "\n");
}
