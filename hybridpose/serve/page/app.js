// The page of `hybridpose serve`: photos, a video or the webcam sent to POST /predict, the answer drawn.
// Plain JavaScript, no library, nothing fetched but this server's own endpoints.
"use strict";

const $ = (id) => document.getElementById(id);
let model = null;        // GET /model
let camera = null;       // {stream, running}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

async function loadModel() {
  const res = await fetch("/model");
  model = await res.json();
  const rules = model.rules ? `${model.rules.rules.length} rule(s) in force` : "no rules";
  $("model").textContent = `${model.run} · ${model.kind} run · ${model.classes.length} classes · ` +
    `levels ${model.levels.join(" › ")} · branches ${model.branches.join(", ")} · skeleton ` +
    `${model.skeleton.name} · ${rules} · hybridpose ${model.versions.hybridpose}`;
  document.body.dataset.ready = "1";
}

async function send(files) {
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name || "frame.jpg");
  const res = await fetch("/predict", { method: "POST", body: form });
  const body = await res.json().catch(() => ({ detail: `HTTP ${res.status}` }));
  if (!res.ok) throw new Error(`${res.status}: ${body.detail}`);
  return body;
}

const FRAME_MAX_SIDE = 720;  // a clip's keypoints are in pixels of its frames decoded at most this large

function keypointsOf(row, picture) {
  // a photo: [[x, y, z, v], ...]; a clip: per sampled frame, and the page shows its first frame
  if (!row.keypoints) return null;
  if (typeof row.keypoints[0] === "object" && row.keypoints[0] !== null && "frame" in row.keypoints[0]) {
    const first = row.keypoints[0];
    const side = picture ? Math.max(picture.videoWidth || 0, picture.videoHeight || 0) : 0;
    return first.frame === 0 && first.keypoints ? scaled(first.keypoints, Math.max(1, side / FRAME_MAX_SIDE)) : null;
  }
  return row.keypoints;
}

function scaled(points, factor) {
  return points.map((p) => (p && p[0] !== null ? [p[0] * factor, p[1] * factor, p[2], p[3]] : p));
}

function draw(canvas, image, points) {
  const w = image.videoWidth || image.naturalWidth || image.width;
  const h = image.videoHeight || image.naturalHeight || image.height;
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(image, 0, 0, w, h);
  if (!points || !model) return;
  const index = Object.fromEntries(model.skeleton.keypoints.map((n, i) => [n, i]));
  const scale = Math.max(2, Math.round(Math.max(w, h) / 200));
  ctx.lineWidth = scale;
  ctx.strokeStyle = "#00e0ff";
  for (const [a, b] of model.skeleton.edges) {
    const p = points[index[a]], q = points[index[b]];
    if (!p || !q || p[0] === null || q[0] === null) continue;
    ctx.beginPath();
    ctx.moveTo(p[0], p[1]);
    ctx.lineTo(q[0], q[1]);
    ctx.stroke();
  }
  ctx.fillStyle = "#ff3b6b";
  for (const p of points) {
    if (!p || p[0] === null) continue;
    ctx.beginPath();
    ctx.arc(p[0], p[1], scale * 1.5, 0, 2 * Math.PI);
    ctx.fill();
  }
}

function card(row, picture) {
  const node = $("card").content.firstElementChild.cloneNode(true);
  const leaf = model.levels[0];
  const labelled = row.confidence !== null && row.confidence !== undefined;
  node.classList.toggle("failed", !labelled);
  node.dataset.label = labelled ? row[leaf] : "";
  node.querySelector(".label").textContent = labelled
    ? `${row[leaf]} (${(100 * row.confidence).toFixed(1)} %)` : `${row.status}: ${row.reason}`;
  node.querySelector(".file").textContent = `${row.path} · ${row.status}` + (row.reason ? ` · ${row.reason}` : "");
  const table = node.querySelector(".levels");
  if (labelled) {
    for (const level of model.levels) {
      const tr = table.insertRow();
      tr.insertCell().textContent = level;
      tr.insertCell().textContent = row[level];
    }
  }
  node.querySelector(".rule").textContent = !labelled ? "" : row.rule
    ? `rule fired: ${row.rule}` + (row.rule_statistic ? ` (${row.rule_statistic})` : "") : "no rule fired";
  const top = node.querySelector(".top");
  for (let k = 1; row[`top${k}`] !== undefined && row[`top${k}`] !== null; k++) {
    const li = document.createElement("li");
    const p = row[`top${k}_prob`];
    li.textContent = `${row[`top${k}`]} ${(100 * p).toFixed(1)} %`;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.round(120 * p)}px`;
    li.appendChild(bar);
    top.appendChild(li);
  }
  if (labelled) {
    node.querySelector(".branches").textContent = "branches: " + model.branches
      .map((b) => `${b} → ${row[`${b}_top`] ?? "—"}`).join(", ");
  }
  if (picture) draw(node.querySelector(".picture"), picture, keypointsOf(row, picture));
  else node.querySelector(".picture").hidden = true;
  return node;
}

function loadPicture(file) {
  // a photo as an <img>; a video's first frame via a <video> element; null where the browser cannot show it
  return new Promise((resolve) => {
    const url = URL.createObjectURL(file);
    if (file.type.startsWith("video/")) {
      const v = document.createElement("video");
      v.muted = true;
      v.onloadeddata = () => resolve(v);
      v.onerror = () => resolve(null);
      v.src = url;
    } else {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => resolve(null);
      img.src = url;
    }
  });
}

async function onFiles(files) {
  if (!files.length) return;
  showError("");
  $("status").textContent = `sending ${files.length} file(s)…`;
  try {
    const [answer, pictures] = await Promise.all([send(files), Promise.all([...files].map(loadPicture))]);
    $("results").replaceChildren(...answer.predictions.map((row, i) => card(row, pictures[i])));
    $("status").textContent = `${answer.predictions.length} answer(s) in ${answer.elapsed_ms} ms`;
    document.body.dataset.answered = String(Number(document.body.dataset.answered || 0) + 1);
  } catch (e) {
    showError(e.message);
    $("status").textContent = "";
  }
}

async function startCamera() {
  showError("");
  try {
    camera = { stream: await navigator.mediaDevices.getUserMedia({ video: true }), running: true };
  } catch (e) {
    showError(`the webcam cannot be opened (${e.message})`);
    return;
  }
  const video = $("video");
  video.srcObject = camera.stream;
  video.hidden = false;
  $("camera").hidden = true;
  $("stop").hidden = false;
  await new Promise((r) => (video.onloadeddata = r));
  const grab = document.createElement("canvas");
  let frames = 0;
  const t0 = performance.now();
  while (camera && camera.running) {  // the next frame leaves when the answer to the last one is back
    grab.width = video.videoWidth;
    grab.height = video.videoHeight;
    grab.getContext("2d").drawImage(video, 0, 0);
    const blob = await new Promise((r) => grab.toBlob(r, "image/jpeg", 0.85));
    try {
      const answer = await send([new File([blob], "webcam.jpg", { type: "image/jpeg" })]);
      $("results").replaceChildren(card(answer.predictions[0], grab));
      showError("");
    } catch (e) {
      showError(e.message);
      await new Promise((r) => setTimeout(r, 500));
    }
    frames++;
    $("status").textContent = `webcam: ${(1000 * frames / (performance.now() - t0)).toFixed(1)} frames/s`;
  }
}

function stopCamera() {
  if (!camera) return;
  camera.running = false;
  camera.stream.getTracks().forEach((t) => t.stop());
  camera = null;
  $("video").hidden = true;
  $("camera").hidden = false;
  $("stop").hidden = true;
}

$("files").addEventListener("change", (e) => onFiles(e.target.files));
$("camera").addEventListener("click", startCamera);
$("stop").addEventListener("click", stopCamera);
loadModel().catch((e) => showError(`GET /model failed: ${e.message}`));
