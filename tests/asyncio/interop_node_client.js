"use strict";
// A scripted Node `ws` client for tests/asyncio/test_interop_node.py, for what the shared
// harness client (tests/helpers/node.py) does not do: messages too large for a command-line
// argument, fragmented messages, and closing with a chosen code and reason.
//
// Usage: node interop_node_client.js < CONFIG_JSON, where CONFIG_JSON has
//   ws_module: path of the `ws` package; url; protocols; perMessageDeflate; timeout_ms;
//   messages: a list of {text}, {binary: hex}, {random_binary: size}, {random_text: size}
//     or {fragments: [{text} | {text_hex} | {binary: hex}, ...]} (one message, one frame each;
//     with unfinished: true, the last frame is not final and the message never ends);
//   expect: how many messages to wait for before closing;
//   close: [code, reason] to close with, or null for a close frame without a code.
// It prints one JSON object: what it sent and received (SHA-256 and length of each message,
// and the data itself when short), the negotiated protocol and extensions, the close code and
// reason it received, and any error. It always exits within timeout_ms.
const crypto = require("crypto");
const config = JSON.parse(require("fs").readFileSync(0, "utf8"));
const WebSocket = require(config.ws_module);

const digest = (buffer) => crypto.createHash("sha256").update(buffer).digest("hex");
const describe = (buffer, isBinary) => ({
  type: isBinary ? "binary" : "text",
  length: buffer.length,
  sha256: digest(buffer),
  data: buffer.length <= 4096 ? (isBinary ? buffer.toString("hex") : buffer.toString()) : null,
});
const result = {
  protocol: null, extensions: null, status: null, sent: [], received: [], close: null,
  error: null,
};
let finished = false;
const finish = () => {
  if (finished) return;
  finished = true;
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0));
};
setTimeout(() => { result.error = result.error || "timeout"; finish(); }, config.timeout_ms);

// Random text that stays ASCII: base64 of random bytes, cut to size.
const randomText = (size) => crypto.randomBytes(Math.ceil(size * 3 / 4) + 3)
  .toString("base64").slice(0, size);
// {text_hex} is a text frame given as raw bytes, to split a UTF-8 character across frames.
const toFrame = (item) => {
  if ("text" in item) return { data: Buffer.from(item.text), binary: false };
  if ("text_hex" in item) return { data: Buffer.from(item.text_hex, "hex"), binary: false };
  return { data: Buffer.from(item.binary, "hex"), binary: true };
};

const ws = new WebSocket(config.url, config.protocols, {
  perMessageDeflate: config.perMessageDeflate,
  handshakeTimeout: config.timeout_ms,
  maxPayload: 64 * 1024 * 1024,
});
ws.on("upgrade", (response) => {
  result.status = response.statusCode;
  result.extensions = response.headers["sec-websocket-extensions"] ?? null;
});
ws.on("unexpected-response", (request, response) => {
  result.status = response.statusCode;
  result.error = "unexpected response " + response.statusCode;
  request.destroy();
  finish();
});
const closeIfDone = () => {
  if (result.received.length < config.expect) return;
  if (config.close === null) ws.close(); // a close frame without a status code
  else ws.close(config.close[0], config.close[1]);
};
ws.on("open", () => {
  result.protocol = ws.protocol;
  for (const message of config.messages) {
    if ("fragments" in message) {
      const frames = message.fragments.map(toFrame);
      frames.forEach((frame, index) => {
        const last = index === frames.length - 1 && !message.unfinished;
        ws.send(frame.data, { binary: frame.binary, fin: last });
      });
      const whole = Buffer.concat(frames.map((frame) => frame.data));
      result.sent.push(describe(whole, frames[0].binary));
    } else if ("random_binary" in message) {
      const data = crypto.randomBytes(message.random_binary);
      ws.send(data, { binary: true });
      result.sent.push(describe(data, true));
    } else if ("random_text" in message) {
      const data = Buffer.from(randomText(message.random_text));
      ws.send(data, { binary: false });
      result.sent.push(describe(data, false));
    } else {
      const frame = toFrame(message);
      ws.send(frame.data, { binary: frame.binary });
      result.sent.push(describe(frame.data, frame.binary));
    }
  }
  closeIfDone();
});
ws.on("message", (data, isBinary) => {
  result.received.push(describe(data, isBinary));
  closeIfDone();
});
ws.on("error", (error) => { result.error = result.error || String(error.message); });
ws.on("close", (code, reason) => {
  result.close = { code: code, reason: reason.toString() };
  finish();
});
