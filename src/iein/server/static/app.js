// IEIN page: parse "Speaker: text" lines, POST /predict, show the label of every step;
// with a causal model, a live mode over the /stream WebSocket.
// No framework, no external assets; all text goes through textContent (never innerHTML).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("form");
  const textarea = $("conversation");
  const button = $("run");
  const statusEl = $("status");
  const resultEl = $("result");
  const table = $("results");
  const summaryEl = $("summary");

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function setStatus(text, kind) {
    statusEl.textContent = text;
    statusEl.className = "status" + (kind ? " " + kind : "");
  }

  // One utterance per non-empty line; the speaker is everything before the first colon.
  function parse(text) {
    const utterances = [];
    text.split(/\r?\n/).forEach((line, i) => {
      if (!line.trim()) return;
      const colon = line.indexOf(":");
      const speaker = colon > 0 ? line.slice(0, colon).trim() : "";
      if (!speaker) throw new Error(`line ${i + 1}: expected "Speaker: text"`);
      utterances.push({ speaker: speaker, text: line.slice(colon + 1).trim() });
    });
    if (!utterances.length) throw new Error('type at least one line "Speaker: text"');
    return utterances;
  }

  function emotionClass(label) {
    return "emo emo-" + String(label).toLowerCase().replace(/[^a-z0-9]+/g, "-");
  }

  function labelChip(label) {
    return el("span", emotionClass(label), label);
  }

  function pct(p) {
    return (100 * p).toFixed(1) + "%";
  }

  function render(data) {
    const nSteps = data.steps;
    const thead = table.tHead;
    const tbody = table.tBodies[0];
    thead.replaceChildren();
    tbody.replaceChildren();
    const head = el("tr");
    head.append(el("th", "num", "#"), el("th", "speaker", "Speaker"), el("th", "text", "Utterance"));
    for (let k = 0; k < nSteps; k++) {
      const th = el("th", "step", "Step " + k);
      th.title = k === 0 ? "initial prediction (P0)" : "after iteration " + k + " (P" + k + ")";
      head.append(th);
    }
    head.append(el("th", "final", "Final"));
    thead.append(head);

    let changedUtterances = 0;
    let changedCells = 0;
    data.utterances.forEach((u, i) => {
      const tr = el("tr");
      tr.dataset.index = String(i);
      const textCell = el("td", "text", u.text);
      if (u.note) textCell.dataset.note = u.note; // empty text: the note is shown by app.css
      tr.append(el("td", "num", String(i + 1)), el("td", "speaker", u.speaker), textCell);
      let rowChanged = false;
      u.steps.forEach((label, k) => {
        const td = el("td", "step");
        td.dataset.step = String(k);
        td.dataset.caption = "Step " + k;
        td.append(labelChip(label));
        if (k > 0 && label !== u.steps[k - 1]) {
          td.classList.add("changed");
          td.title = "changed from " + u.steps[k - 1] + " at step " + k;
          td.append(el("span", "was", "was " + u.steps[k - 1]));
          rowChanged = true;
          changedCells++;
        }
        tr.append(td);
      });
      const final = el("td", "final");
      final.dataset.caption = "Final";
      final.dataset.label = u.label;
      final.append(labelChip(u.label), el("span", "prob", pct(u.probs[u.label])));
      final.title = Object.entries(u.probs)
        .sort((a, b) => b[1] - a[1])
        .map(([name, p]) => name + " " + pct(p))
        .join(", ");
      tr.append(final);
      if (rowChanged) {
        tr.classList.add("row-changed");
        changedUtterances++;
      }
      tbody.append(tr);
    });
    const n = data.utterances.length;
    summaryEl.textContent =
      `${n} utterance${n === 1 ? "" : "s"}, ${nSteps} step${nSteps === 1 ? "" : "s"} ` +
      `(step 0 = initial prediction, step ${nSteps - 1} = final). ` +
      `${changedUtterances} utterance${changedUtterances === 1 ? "" : "s"} changed label ` +
      `(${changedCells} change${changedCells === 1 ? "" : "s"} in all, highlighted).`;
    resultEl.hidden = false;
    if (resultEl.getBoundingClientRect().top > window.innerHeight * 0.75) {
      resultEl.scrollIntoView({ block: "start" });
    }
  }

  async function submit(event) {
    if (event) event.preventDefault();
    let utterances;
    try {
      utterances = parse(textarea.value);
    } catch (err) {
      setStatus(err.message, "error");
      return;
    }
    button.disabled = true;
    setStatus("Recognizing " + utterances.length + " utterances…", "busy");
    const started = performance.now();
    try {
      const response = await fetch("/predict", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ utterances: utterances }),
      });
      let data = null;
      try {
        data = await response.json();
      } catch (_) {
        data = null;
      }
      if (!response.ok) {
        const message = data && data.message ? data.message : "HTTP " + response.status;
        setStatus("Error: " + message, "error");
        return;
      }
      render(data);
      setStatus("Done in " + Math.round(performance.now() - started) + " ms.", "ok");
      document.body.dataset.state = "done";
    } catch (err) {
      setStatus("Error: could not reach the server (" + err.message + ")", "error");
    } finally {
      button.disabled = false;
    }
  }

  async function loadModel() {
    const info = $("model-info");
    try {
      const response = await fetch("/model", { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const m = await response.json();
      const card = m.card || {};
      const parts = [];
      // the name the service was started with (a shipped name or the file's name), then the
      // data it was trained on: two shipped models are both trained on "meld"
      const name = (m.source || "loaded").split(/[\\/]/).pop();
      parts.push("Model: " + name + (card.dataset ? " (trained on " + card.dataset + ")" : ""));
      parts.push(m.labels.length + " labels (" + m.labels.join(", ") + ")");
      if (m.steps) parts.push(m.steps + " steps (T = " + (m.steps - 1) + ")");
      const score = (split) => card[split] && card[split].final && card[split].final.weighted_f1;
      // scores are stored in percent already
      if (typeof score("test") === "number") parts.push("test weighted F1 " + score("test").toFixed(1));
      else if (typeof score("dev") === "number") parts.push("dev weighted F1 " + score("dev").toFixed(1));
      info.textContent = parts.join(" · ");
      $("live").hidden = !m.streams;
    } catch (err) {
      info.textContent = "Model card unavailable (" + err.message + ")";
    }
  }

  // Live mode (a causal model only): one WebSocket session at /stream, opened by the first
  // turn; each turn is answered with its final label.
  let socket = null;
  const pending = [];

  function liveStatus(text, kind) {
    const node = $("live-status");
    node.textContent = text;
    node.className = "status" + (kind ? " " + kind : "");
  }

  function showTurn(m) {
    const li = el("li", "turn");
    li.dataset.index = String(m.index);
    li.dataset.label = m.label;
    li.append(el("span", "speaker", m.speaker), el("span", "text", m.text), labelChip(m.label),
              el("span", "prob", pct(m.probs[m.label])));
    $("live-turns").append(li);
    liveStatus(m.index + 1 + " turn" + (m.index ? "s" : "") + " labelled.", "ok");
  }

  function openSocket() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/stream");
    socket.addEventListener("message", (event) => {
      const m = JSON.parse(event.data);
      if (m.type === "ready") {
        pending.splice(0).forEach((turn) => socket.send(JSON.stringify(turn)));
      } else if (m.type === "label") {
        showTurn(m);
      } else if (m.type === "error") {
        liveStatus("Error: " + m.message, "error");
      }
    });
    socket.addEventListener("close", () => {
      socket = null;
    });
  }

  $("live-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const speaker = $("live-speaker").value.trim();
    const text = $("live-text").value.trim();
    if (!speaker) {
      liveStatus("Type who speaks.", "error");
      return;
    }
    const turn = { speaker: speaker, text: text };
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(turn));
    else {
      pending.push(turn);
      if (!socket) openSocket();
    }
    $("live-text").value = "";
    $("live-text").focus();
  });

  form.addEventListener("submit", submit);
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) submit(event);
  });
  loadModel();
})();
