// The page of `maskrcnn serve`: send an image to POST /predict, draw its masks, boxes, class names and scores
// on a canvas, list the detections in a table. The score slider filters what is shown without a new request.
// Plain JavaScript, no build step. document.body.dataset.state says where the page is: "idle", "predicting",
// "drawn" or "error" (the browser test waits for "drawn").
"use strict";

const canvas = document.getElementById("canvas");
const context = canvas.getContext("2d", { willReadFrequently: true });
const fileInput = document.getElementById("file");
const drop = document.getElementById("drop");
const slider = document.getElementById("score");
const sliderValue = document.getElementById("score-value");
const statusLine = document.getElementById("status");
const tableBody = document.querySelector("#detections tbody");

const COLOURS = [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240],
  [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40], [128, 0, 0]];
const MASK_ALPHA = 0.45;

let picture = null;  // ImageBitmap of the uploaded image, upright (EXIF applied, as the server does)
let result = null;   // the server's answer; each detection gets .runs, its mask as [start, length] runs of ones

document.body.dataset.state = "idle";

// COCO's compressed RLE string -> counts (pycocotools maskApi.c rleFrString): each count is a little-endian
// sequence of 5-bit groups stored as chars from 48, bit 0x20 meaning "more follows" and bit 0x10 of the last
// group the sign; from the third count on, each is stored as the difference to the count two before it.
function decodeCounts(text) {
  const counts = [];
  let position = 0;
  while (position < text.length) {
    let value = 0, shift = 0, more = true;
    while (more) {
      const c = text.charCodeAt(position++) - 48;
      value += (c & 0x1f) * 2 ** shift;  // arithmetic, not <<: a shift of 32 or more would wrap in JavaScript
      shift += 5;
      more = (c & 0x20) !== 0;
      if (!more && (c & 0x10) !== 0) value -= 2 ** shift;
    }
    if (counts.length > 2) value += counts[counts.length - 2];
    counts.push(value);
  }
  return counts;
}

// counts alternate background, foreground, ... over the pixels in column-major order (down each column,
// then the next column); keep the foreground stretches as [start, length].
function foregroundRuns(counts) {
  const runs = [];
  let start = 0;
  counts.forEach((count, index) => {
    if (index % 2 === 1 && count > 0) runs.push([start, count]);
    start += count;
  });
  return runs;
}

function colourOf(index) { return COLOURS[index % COLOURS.length]; }

function visibleDetections() {
  const threshold = Number(slider.value);
  return result ? result.detections.filter((d) => d.score >= threshold) : [];
}

function draw() {
  if (!picture || !result) return;
  const width = result.width, height = result.height;
  canvas.width = width;
  canvas.height = height;
  context.drawImage(picture, 0, 0, width, height);
  const shown = visibleDetections();
  const pixels = context.getImageData(0, 0, width, height);
  const data = pixels.data;
  for (const detection of shown) {
    const [r, g, b] = colourOf(detection.index);
    for (const [start, length] of detection.runs) {
      for (let i = start; i < start + length; i++) {
        const row = i % height, column = Math.floor(i / height);  // column-major
        const offset = (row * width + column) * 4;
        data[offset] = data[offset] * (1 - MASK_ALPHA) + r * MASK_ALPHA;
        data[offset + 1] = data[offset + 1] * (1 - MASK_ALPHA) + g * MASK_ALPHA;
        data[offset + 2] = data[offset + 2] * (1 - MASK_ALPHA) + b * MASK_ALPHA;
      }
    }
  }
  context.putImageData(pixels, 0, 0);
  const fontSize = Math.max(10, Math.round(Math.min(width, height) / 40));
  context.font = `${fontSize}px sans-serif`;
  context.lineWidth = Math.max(1, Math.round(fontSize / 8));
  for (const detection of shown) {
    const [x1, y1, x2, y2] = detection.box;
    const colour = `rgb(${colourOf(detection.index).join(",")})`;
    context.strokeStyle = colour;
    context.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const label = `${detection.class_name} ${detection.score.toFixed(2)}`;
    const labelWidth = context.measureText(label).width + 4;
    const top = y1 >= fontSize + 2 ? y1 - fontSize - 2 : y1;
    context.fillStyle = colour;
    context.fillRect(x1, top, labelWidth, fontSize + 2);
    context.fillStyle = "#fff";
    context.fillText(label, x1 + 2, top + fontSize - 1);
  }
  fillTable(shown);
  statusLine.textContent = `${shown.length} of ${result.detections.length} detections shown (${width}x${height}).`;
  canvas.dataset.shown = String(shown.length);
  document.body.dataset.state = "drawn";
}

function fillTable(shown) {
  tableBody.replaceChildren(...shown.map((detection) => {
    const row = document.createElement("tr");
    const swatch = `<span class="swatch" style="background: rgb(${colourOf(detection.index).join(",")})"></span>`;
    const area = detection.runs.reduce((sum, run) => sum + run[1], 0);
    const cells = [String(detection.index + 1), detection.class_name, detection.score.toFixed(3),
      detection.box.map((v) => v.toFixed(1)).join(", "), String(area)];
    cells.forEach((text, column) => {
      const cell = document.createElement("td");
      if (column === 1) cell.innerHTML = swatch;
      cell.append(text);
      row.append(cell);
    });
    return row;
  }));
}

function fail(message) {
  statusLine.textContent = message;
  statusLine.classList.add("error");
  document.body.dataset.state = "error";
}

async function predict(file) {
  document.body.dataset.state = "predicting";
  statusLine.classList.remove("error");
  statusLine.textContent = `Predicting ${file.name}...`;
  const form = new FormData();
  form.append("image", file, file.name);
  try {
    const response = await fetch("/predict", { method: "POST", body: form });
    const answer = await response.json();
    if (!response.ok) return fail(`The server refused the image: ${answer.error}`);
    picture = await createImageBitmap(file, { imageOrientation: "from-image" });
    answer.detections.forEach((detection, index) => {
      detection.index = index;
      detection.runs = foregroundRuns(decodeCounts(detection.mask.counts));
    });
    result = answer;
    draw();
  } catch (error) {
    fail(`Could not predict: ${error}`);
  }
}

fileInput.addEventListener("change", () => { if (fileInput.files.length) predict(fileInput.files[0]); });
slider.addEventListener("input", () => {
  sliderValue.textContent = Number(slider.value).toFixed(2);
  draw();
});
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files.length) predict(event.dataTransfer.files[0]);
});

fetch("/model").then((response) => response.json()).then((model) => {
  const classes = model.class_names.slice(1).join(", ");
  document.getElementById("model").textContent =
    `${model.config.backbone || "model"} (${model.backend}), classes: ${classes}`;
}).catch(() => { document.getElementById("model").textContent = "model description unavailable"; });
