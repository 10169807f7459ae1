// qwen-audio web UI: a client of the server's own OpenAI-compatible API (no framework, no build).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { history: [], attachments: [], recorder: null, busy: false };

const keyInput = $("api-key");
keyInput.value = localStorage.getItem("qwen-audio-key") || "";
keyInput.addEventListener("change", () => { localStorage.setItem("qwen-audio-key", keyInput.value); loadModel(); });

function authHeaders() {
  return keyInput.value ? { Authorization: "Bearer " + keyInput.value } : {};
}

function setStatus(text) { $("status").textContent = text; }

async function errorText(response) {
  try { const body = await response.json(); return body.error ? body.error.message : JSON.stringify(body); }
  catch (_) { return response.status + " " + response.statusText; }
}

async function loadModel() {
  try {
    const response = await fetch("/v1/models", { headers: authHeaders() });
    if (!response.ok) throw new Error(await errorText(response));
    const models = await response.json();
    $("model-id").textContent = "model: " + models.data.map((m) => m.id).join(", ");
  } catch (error) {
    $("model-id").textContent = "not connected: " + error.message;
  }
}

// ------------------------------------------------------------------ rendering

function addMessage(role, text, audios) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  for (const audio of audios || []) {
    const player = document.createElement("audio");
    player.controls = true;
    player.src = audio.url;
    div.appendChild(player);
  }
  $("chat-log").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function renderAttachments() {
  const box = $("attachments");
  box.replaceChildren();
  state.attachments.forEach((item, index) => {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.textContent = item.name;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.title = "remove";
    remove.addEventListener("click", () => { state.attachments.splice(index, 1); renderAttachments(); });
    chip.appendChild(remove);
    box.appendChild(chip);
  });
}

function showWords(words, audioUrl) {
  const body = $("word-table").querySelector("tbody");
  body.replaceChildren();
  for (const w of words) {
    const row = document.createElement("tr");
    for (const value of [w.word, w.start.toFixed(2), w.end.toFixed(2)]) {
      const cell = document.createElement("td");
      cell.textContent = value;
      row.appendChild(cell);
    }
    row.addEventListener("click", () => { const p = $("player"); p.currentTime = w.start; p.play(); });
    body.appendChild(row);
  }
  $("player").src = audioUrl || "";
  $("words-panel").hidden = false;
}

// ------------------------------------------------------------------ audio input

function formatOf(name, mime) {
  const ext = (name.split(".").pop() || "").toLowerCase();
  if (["wav", "mp3", "flac", "ogg", "opus", "webm", "m4a", "mp4", "aac", "aiff"].includes(ext)) return ext;
  const sub = (mime.split("/")[1] || "wav").split(";")[0];
  return { mpeg: "mp3", "x-wav": "wav", wave: "wav", "x-m4a": "m4a", "x-flac": "flac" }[sub] || sub;
}

function readBase64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

async function attach(blob, name) {
  const data = await readBase64(blob);
  state.attachments.push({ name, blob, data, format: formatOf(name, blob.type || ""), url: URL.createObjectURL(blob) });
  renderAttachments();
}

$("audio-file").addEventListener("change", async (event) => {
  for (const file of event.target.files) await attach(file, file.name);
  event.target.value = "";
});

async function toggleRecording() {
  const button = $("record");
  if (state.recorder) { state.recorder.stop(); return; }
  let stream;
  try { stream = await navigator.mediaDevices.getUserMedia({ audio: true }); }
  catch (error) { setStatus("microphone unavailable: " + error.message); return; }
  const chunks = [];
  const recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
  recorder.onstop = async () => {
    stream.getTracks().forEach((t) => t.stop());
    state.recorder = null;
    button.classList.remove("recording");
    button.textContent = "● Record";
    const type = recorder.mimeType || "audio/webm";
    const ext = formatOf("", type);
    await attach(new Blob(chunks, { type }), "recording-" + new Date().toLocaleTimeString() + "." + ext);
  };
  recorder.start();
  state.recorder = recorder;
  button.classList.add("recording");
  button.textContent = "■ Stop";
}

if (!(navigator.mediaDevices && window.MediaRecorder)) {
  $("record").disabled = true;
  $("record").title = "recording needs a secure context (https or localhost) and MediaRecorder";
} else {
  $("record").addEventListener("click", toggleRecording);
}

// ------------------------------------------------------------------ requests

async function readSse(response, onDelta) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const payload = line.slice(6);
        if (payload === "[DONE]") return;
        const chunk = JSON.parse(payload);
        if (chunk.error) throw new Error(chunk.error.message);
        for (const choice of chunk.choices || []) if (choice.delta && choice.delta.content) onDelta(choice.delta.content);
      }
    }
  }
}

async function sendChat(text) {
  const content = [];
  if (text) content.push({ type: "text", text });
  for (const a of state.attachments) content.push({ type: "input_audio", input_audio: { data: a.data, format: a.format } });
  if (!content.length) { setStatus("type a message or attach audio"); return; }
  addMessage("user", text, state.attachments);
  state.history.push({ role: "user", content });
  state.attachments = [];
  renderAttachments();
  const stream = $("stream").checked;
  const bubble = addMessage("assistant", "…");
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json", ...authHeaders() },
    body: JSON.stringify({ model: "qwen-audio", messages: state.history, stream }),
  });
  let reply = "";
  try {
    if (!response.ok) throw new Error(await errorText(response));
    if (stream) {
      bubble.textContent = "";
      await readSse(response, (piece) => { reply += piece; bubble.textContent = reply; });
    } else {
      reply = (await response.json()).choices[0].message.content;
      bubble.textContent = reply;
    }
  } catch (error) {
    state.history.pop();  // the turn failed: do not send it again with the next message
    bubble.remove();
    throw error;
  }
  state.history.push({ role: "assistant", content: reply });
}

async function sendAudioTask(task) {
  if (state.attachments.length !== 1) { setStatus("attach exactly one audio to " + task); return; }
  const item = state.attachments[0];
  const form = new FormData();
  form.append("file", item.blob, item.name);
  form.append("model", "qwen-audio");
  form.append("response_format", "verbose_json");
  form.append("timestamp_granularities[]", "word");
  addMessage("user", task + ": " + item.name, [item]);
  state.attachments = [];
  renderAttachments();
  const path = task === "translate" ? "/v1/audio/translations" : "/v1/audio/transcriptions";
  const response = await fetch(path, { method: "POST", headers: authHeaders(), body: form });
  if (!response.ok) throw new Error(await errorText(response));
  const result = await response.json();
  addMessage("assistant", result.text + (result.language ? "  [" + result.language + ", " + result.duration.toFixed(2) + " s]" : ""));
  showWords(result.words || [], item.url);
}

$("chat-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (state.busy) return;
  state.busy = true;
  $("send").disabled = true;
  setStatus("working…");
  const text = $("prompt").value.trim();
  try {
    if ($("mode").value === "chat") await sendChat(text); else await sendAudioTask($("mode").value);
    $("prompt").value = "";
    setStatus("");
  } catch (error) {
    addMessage("error", error.message);
    setStatus("");
  } finally {
    state.busy = false;
    $("send").disabled = false;
  }
});

$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("chat-form").requestSubmit(); }
});

$("clear").addEventListener("click", () => {
  state.history = [];
  $("chat-log").replaceChildren();
  $("words-panel").hidden = true;
});

loadModel();
