"""The labelling page: one HTML document with a little plain JavaScript (no build step).

Keys: ``1``-``9`` label the window with the n-th label, ``s`` skips it, ``n`` focuses the
new-label box (Enter adds the label and labels the window with it).
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>sigmoid-train label</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 960px; color: #222; }
 header { display: flex; justify-content: space-between; align-items: baseline; }
 h1 { font-size: 1.2rem; margin: 0; }
 #progress { font-variant-numeric: tabular-nums; }
 #bar { height: 6px; background: #eee; border-radius: 3px; margin: .5rem 0 1rem; }
 #bar div { height: 100%; background: #2a7; border-radius: 3px; width: 0; }
 #meta { margin: .3rem 0 .6rem; }
 #meta .model { font-weight: 600; }
 #plot { width: 100%; border: 1px solid #ddd; border-radius: 4px; min-height: 200px; }
 #buttons { display: flex; flex-wrap: wrap; gap: .5rem; margin: 1rem 0; }
 button { font-size: 1rem; padding: .45rem .9rem; border: 1px solid #999; border-radius: 4px;
          background: #f7f7f7; cursor: pointer; }
 button.suggested { border-color: #2a7; background: #e6f6ee; }
 button kbd { font-size: .75rem; color: #666; margin-right: .35rem; }
 #skip { background: #fff; }
 #newlabel { font-size: 1rem; padding: .4rem; width: 12rem; }
 #done { display: none; font-size: 1.1rem; margin: 2rem 0; }
 #error { color: #b00; }
 .hint { color: #666; font-size: .85rem; }
</style></head>
<body>
<header><h1>sigmoid-train label</h1><span id="progress"></span></header>
<div id="bar"><div></div></div>
<div id="window">
 <div id="meta"></div>
 <img id="plot" alt="the window's channels over time">
 <div id="buttons"></div>
 <div><input id="newlabel" placeholder="new label (n)" maxlength="64">
  <button id="add">add label</button>
  <button id="skip"><kbd>s</kbd>skip</button></div>
 <p class="hint">Keys: 1-9 label, s skip, n new label. Every label is saved at once.</p>
</div>
<div id="done">Every window is labelled. Train on them with
 <code>sigmoid-train fit DATA --add DIR</code>.</div>
<p id="error"></p>
<script>
"use strict";
let state = null;
const $ = (id) => document.getElementById(id);

function fmtTime(t) {
  if (t === null || t === undefined) return "";
  return t > 1e9 ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 23) + " UTC"
                 : t.toFixed(2) + " s";
}

function render(s) {
  state = s;
  const p = s.progress;
  $("progress").textContent = `labelled ${p.labelled} / ${p.total}` +
    (p.skipped ? ` (skipped ${p.skipped})` : "");
  $("bar").firstElementChild.style.width =
    (p.total ? 100 * (p.labelled + p.skipped) / p.total : 0) + "%";
  const w = s.window;
  $("window").style.display = w ? "" : "none";
  $("done").style.display = w ? "none" : "block";
  if (!w) return;
  const meta = $("meta");
  meta.textContent = "";
  const model = document.createElement("span");
  model.className = "model";
  model.textContent = `model says ${w.label} (${(100 * w.confidence).toFixed(0)}%)`;
  meta.append(model, ` \u2014 ${w.device} on ${w.node}, ${fmtTime(w.window_start)}` +
    `, captured as ${w.reason}` +
    (w.anomaly_score !== null && w.anomaly_score !== undefined
      ? `, anomaly score ${w.anomaly_score.toPrecision(3)}` : ""));
  const img = $("plot");
  img.dataset.id = w.id;
  img.src = `/plot/${w.id}.png`;
  const box = $("buttons");
  box.textContent = "";
  s.labels.forEach((name, i) => {
    const b = document.createElement("button");
    b.className = "label" + (name === w.label ? " suggested" : "");
    b.dataset.label = name;
    if (i < 9) {
      const k = document.createElement("kbd");
      k.textContent = String(i + 1);
      b.append(k);
    }
    b.append(name);
    b.onclick = () => send(name);
    box.append(b);
  });
}

async function call(url, body) {
  const opts = body === undefined ? {} : {method: "POST",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const r = await fetch(url, opts);
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  $("error").textContent = "";
  return data;
}

async function send(label) {
  if (!state || !state.window) return;
  try { render(await call("/api/label", {id: state.window.id, label: label})); }
  catch (e) { $("error").textContent = e.message; }
}

function addLabel() {
  const name = $("newlabel").value.trim();
  if (!name) return;
  $("newlabel").value = "";
  $("newlabel").blur();
  send(name);
}

$("skip").onclick = () => send(null);
$("add").onclick = addLabel;
$("newlabel").addEventListener("keydown", (e) => {
  if (e.key === "Enter") { e.preventDefault(); addLabel(); }
  if (e.key === "Escape") $("newlabel").blur();
});
document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key >= "1" && e.key <= "9" && state && state.labels[+e.key - 1] !== undefined) {
    send(state.labels[+e.key - 1]);
  } else if (e.key === "s") {
    send(null);
  } else if (e.key === "n") {
    e.preventDefault();
    $("newlabel").focus();
  }
});
call("/api/next").then(render).catch((e) => { $("error").textContent = e.message; });
</script>
</body></html>
"""
