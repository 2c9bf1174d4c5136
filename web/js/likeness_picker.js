// Likeness attribute picker and live preview.
//
// * On Edit Attributes and Attribute Sweep, every `attribute...` text input becomes a dropdown of the direction
//   names served by GET /likeness/directions (narrowed to the set chosen in the connected Load Directions node);
//   the saved value is still the name, so API prompts that type a name keep working.
// * Edit Attributes' `strength...` inputs become sliders over the chosen attribute's recommended range; a value
//   outside it (from a saved workflow or an API prompt) is kept and shown as it is.
// * Edit Attributes shows a live preview: each change of an edit (debounced) asks POST /likeness/preview for the
//   edited face rendered by StyleGAN2 at 256 px, starting from the last W+ output of the upstream Invert Face /
//   Load W+ node in this server session (or the Load W+ node's file). At most one request per node is in
//   flight; the newest values win.
import { api } from "../../../scripts/api.js";
import { app } from "../../../scripts/app.js";
import { notSerialized } from "./likeness.js";

const PICKER_NODES = new Set(["Likeness_EditAttributes", "Likeness_AttributeSweep"]);
const PREVIEW_NODE = "Likeness_EditAttributes";
const SOURCE_NODES = new Set(["Likeness_InvertFace", "Likeness_LoadWPlus", "Likeness_MixIdentities"]);
const ATTRIBUTE = /(^|[._])attribute(_\w+)?$/;
const DEBOUNCE_MS = 150;
const PREVIEW_SIZE = 256;
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

// Read by the browser tests: what was loaded and what the previews did.
// `shown`: the last few previews put on a node ({node, edits, png: the bytes}), newest last.
const state = { catalog: { sets: [], problems: [] }, loaded: false, previews: 0, errors: [], shown: [] };
const SHOWN_KEPT = 8;
window.LikenessPicker = state;

async function loadCatalog() {
  const res = await api.fetchApi("/likeness/directions");
  if (!res.ok) throw new Error(`GET /likeness/directions answered ${res.status}`);
  state.catalog = await res.json();
  state.loaded = true;
}

function allNames() {
  const names = [];
  for (const set of state.catalog.sets) for (const a of set.attributes) if (!names.includes(a.name)) names.push(a.name);
  return names;
}

function widget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

function upstream(node, inputName) {
  const input = node.inputs?.find((i) => i.name === inputName);
  if (!input || input.link == null) return null;
  const link = node.graph?.links?.get ? node.graph.links.get(input.link) : node.graph?.links?.[input.link];
  return link ? node.graph.getNodeById(link.origin_id) : null;
}

function directionSet(node) {
  const loader = upstream(node, "directions");
  const name = loader && widget(loader, "direction_set")?.value;
  return state.catalog.sets.find((s) => s.name === name) || null;
}

function attributeInfo(node, name) {
  const sets = directionSet(node) ? [directionSet(node)] : state.catalog.sets;
  for (const set of sets) {
    const found = set.attributes.find((a) => a.name === name);
    if (found) return found;
  }
  return null;
}

function strengthFor(node, attributeWidget) {
  return widget(node, attributeWidget.name.replace(/attribute/, "strength"));
}

// Dropdown choices and slider ranges follow the connected direction set and the chosen attributes.
function refreshPicker(node) {
  watchWidgets(node);
  const set = directionSet(node);
  const names = set ? set.attributes.map((a) => a.name) : allNames();
  for (const w of node.widgets || []) {
    if (!ATTRIBUTE.test(w.name) || w.type !== "combo") continue;
    w.options.values = node.likenessOptional?.has(w.name) ? ["", ...names] : names;
    const strength = strengthFor(node, w);
    if (!strength || strength.type !== "slider") continue;
    const info = attributeInfo(node, w.value);
    const [lo, hi] = info ? info.range : [-5, 5];
    Object.assign(strength.options, { min: lo, max: hi, step2: (hi - lo) / 100, precision: 2, round: 0.01 });
    strength.tooltip = info
      ? `${info.name}: recommended ${lo}..${hi}, rows ${info.default_rows} (${info.licence})`
      : strength.tooltip;
  }
  node.setDirtyCanvas(true, true);
}

function refreshAll() {
  for (const node of app.graph?.nodes || []) if (PICKER_NODES.has(node.comfyClass)) refreshPicker(node);
}

// ---- live preview -------------------------------------------------------------------------------------------

function previewWidget(node) {
  let w = widget(node, "likeness_live_preview");
  if (w) return w;
  const box = document.createElement("div");
  Object.assign(box.style, { display: "flex", flexDirection: "column", alignItems: "center", gap: "2px" });
  const img = document.createElement("img");
  Object.assign(img.style, { width: "128px", height: "128px", objectFit: "contain", background: "#111" });
  img.alt = "live preview";
  const status = document.createElement("div");
  Object.assign(status.style, { fontSize: "11px", color: "#bbb", textAlign: "center", whiteSpace: "pre-wrap" });
  status.textContent = "live preview: queue the workflow once, then move a strength";
  box.append(img, status);
  w = node.addDOMWidget("likeness_live_preview", "likeness_preview", box, {
    hideOnZoom: false,
    getValue: () => "",
    setValue: () => {},
    getMinHeight: () => 160,
  });
  w.img = img;
  w.status = status;
  return notSerialized(w);
}

function findSource(node) {
  let current = node;
  for (let hops = 0; hops < 16; hops++) {
    const origin = upstream(current, "wplus") || upstream(current, "wplus_a");
    if (!origin) return null;
    if (SOURCE_NODES.has(origin.comfyClass)) {
      const source = { node: String(origin.id) };
      if (origin.comfyClass === "Likeness_LoadWPlus") source.file = widget(origin, "wplus_name")?.value;
      return { source, title: origin.title };
    }
    current = origin; // through other W+ nodes (e.g. another Edit Attributes) to the code they start from
  }
  return null;
}

function currentEdits(node) {
  const edits = [];
  for (const w of node.widgets || []) {
    if (!ATTRIBUTE.test(w.name) || !w.value) continue;
    const strength = strengthFor(node, w);
    const rows = widget(node, w.name.replace(/attribute/, "rows"));
    edits.push({ attribute: w.value, strength: Number(strength?.value ?? 0), rows: rows?.value || "default" });
  }
  for (const raw of String(widget(node, "extra_edits")?.value || "").split("\n")) {
    const parts = raw.split("#")[0].replace(/=/g, " ").trim().split(/\s+/);
    if (parts.length >= 2 && Number.isFinite(Number(parts[1]))) {
      edits.push({ attribute: parts[0], strength: Number(parts[1]), rows: parts[2] || "default" });
    }
  }
  return edits;
}

async function sourceReady(found) {
  if (found.source.file) return true;
  const res = await api.fetchApi("/likeness/sources");
  if (!res.ok) throw new Error(`GET /likeness/sources answered ${res.status}`);
  return found.source.node in (await res.json()).nodes;
}

function showFailure(w, message) {
  state.errors.push(message);
  w.status.textContent = `live preview failed: ${message}`;
  w.status.style.color = "#f88";
}

async function runPreview(node) {
  const w = previewWidget(node);
  const found = findSource(node);
  if (!found) {
    w.status.textContent = "live preview: connect a W+ code from Invert Face or Load W+";
    return;
  }
  if (!(await sourceReady(found))) {
    w.status.textContent = `live preview: queue the workflow once (starts from node #${found.source.node}, ${found.title})`;
    return;
  }
  const body = {
    source: found.source,
    edits: currentEdits(node),
    direction_set: directionSet(node)?.name ?? widget(upstream(node, "directions") || {}, "direction_set")?.value,
    e4e: widget(app.graph.nodes.find((n) => n.comfyClass === "Likeness_LoadE4E") || {}, "e4e_name")?.value,
    ganspace_mode: widget(node, "ganspace_mode")?.value || "offset",
    size: PREVIEW_SIZE,
    client_id: api.clientId || "",
  };
  const started = performance.now();
  const res = await api.fetchApi("/likeness/preview", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!res.ok) {
    const message = (await res.json().catch(() => ({}))).error || `HTTP ${res.status}`;
    return showFailure(w, message);
  }
  // Read as bytes, not res.blob(): Chromium keeps no copy of a body drained into a Blob, so DevTools (and
  // Playwright's response.body()) would see it empty. The signature check turns a proxy's HTML page into an error.
  const bytes = new Uint8Array(await res.arrayBuffer());
  if (!PNG_SIGNATURE.every((b, i) => bytes[i] === b)) {
    const message = `the answer is not a PNG (${res.headers.get("content-type")}, ${bytes.length} bytes)`;
    return showFailure(w, message);
  }
  const blob = new Blob([bytes], { type: "image/png" });
  if (w.img.src.startsWith("blob:")) URL.revokeObjectURL(w.img.src);
  w.img.src = URL.createObjectURL(blob);
  w.status.style.color = "#bbb";
  const summary = body.edits.map((e) => `${e.attribute} ${e.strength >= 0 ? "+" : ""}${e.strength.toFixed(2)}`);
  w.status.textContent = `${summary.join(", ") || "no edits"}  (${Math.round(performance.now() - started)} ms)`;
  state.previews += 1;
  state.shown.push({ node: node.id, edits: body.edits, png: bytes });
  if (state.shown.length > SHOWN_KEPT) state.shown.shift();
}

// Debounced; one request in flight per node; changes made meanwhile trigger one more run with the newest values.
function schedulePreview(node) {
  if (node.comfyClass !== PREVIEW_NODE) return;
  clearTimeout(node.likenessTimer);
  node.likenessTimer = setTimeout(async () => {
    if (node.likenessBusy) {
      node.likenessAgain = true;
      return;
    }
    node.likenessBusy = true;
    try {
      await runPreview(node);
    } catch (err) {
      state.errors.push(String(err));
      console.error("Likeness live preview:", err);
    } finally {
      node.likenessBusy = false;
      if (node.likenessAgain) {
        node.likenessAgain = false;
        schedulePreview(node);
      }
    }
  }, DEBOUNCE_MS);
}

// Edits re-render the preview; a changed attribute re-ranges its slider; a changed slot count (DynamicCombo)
// brings new widgets, which get the same treatment. Idempotent.
function watchWidgets(node) {
  for (const w of node.widgets || []) {
    if (w.likenessWatched || !/attribute|strength|rows|extra_edits|ganspace_mode|^edits$/.test(w.name)) continue;
    w.likenessWatched = true;
    const callback = w.callback;
    w.callback = function (value) {
      const r = callback?.apply(this, arguments);
      if (w.name === "edits") {
        setTimeout(() => {
          watchWidgets(node);
          refreshPicker(node);
        }, 0);
      } else if (ATTRIBUTE.test(w.name)) refreshPicker(node);
      schedulePreview(node);
      return r;
    };
  }
}

// Text inputs named attribute... become dropdowns; strengths of Edit Attributes become sliders. Also inside a
// DynamicCombo (Edit Attributes' "edits": 1..8 slots named edits.attribute_1, edits.strength_1, ...).
// Returns the names of the attribute inputs that may be left empty (with their DynamicCombo prefix).
function pickerInputs(nodeData) {
  const names = allNames();
  const optionalNames = new Set();
  const convert = (inputs, prefix, optionalSection) => {
    for (const section of ["required", "optional"]) {
      for (const [name, spec] of Object.entries(inputs?.[section] || {})) {
        if (spec?.[0] === "COMFY_DYNAMICCOMBO_V3") {
          for (const option of spec[1]?.options || []) convert(option.inputs, `${prefix}${name}.`, false);
        } else if (ATTRIBUTE.test(name) && spec[0] === "STRING" && names.length) {
          const optional = optionalSection || section === "optional" || spec[1]?.default === "";
          if (optional) optionalNames.add(prefix + name);
          inputs[section][name] = [optional ? ["", ...names] : names, { ...(spec[1] || {}) }];
        } else if (/strength/.test(name) && spec[0] === "FLOAT" && nodeData.name === PREVIEW_NODE) {
          inputs[section][name] = ["FLOAT", { ...(spec[1] || {}), display: "slider" }];
        }
      }
    }
  };
  convert(nodeData.input, "", false);
  return optionalNames;
}

app.registerExtension({
  name: "likeness.picker",
  async init() {
    try {
      await loadCatalog();
    } catch (err) {
      console.error("Likeness: the attribute list could not be loaded:", err);
    }
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!PICKER_NODES.has(nodeData.name)) return;
    nodeType.prototype.likenessOptional = pickerInputs(nodeData);
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const r = onConfigure?.apply(this, arguments);
      setTimeout(() => refreshPicker(this), 0);
      return r;
    };
    const onConnectionsChange = nodeType.prototype.onConnectionsChange;
    nodeType.prototype.onConnectionsChange = function () {
      const r = onConnectionsChange?.apply(this, arguments);
      refreshPicker(this);
      return r;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function () {
      const r = onExecuted?.apply(this, arguments);
      schedulePreview(this); // the source code now exists (or changed)
      return r;
    };
  },
  nodeCreated(node) {
    if (node.comfyClass === "Likeness_LoadDirections") {
      const w = widget(node, "direction_set");
      if (w) {
        const callback = w.callback;
        w.callback = function () {
          const r = callback?.apply(this, arguments);
          refreshAll();
          return r;
        };
      }
      return;
    }
    if (!PICKER_NODES.has(node.comfyClass)) return;
    watchWidgets(node);
    if (node.comfyClass === PREVIEW_NODE) previewWidget(node);
    setTimeout(() => refreshPicker(node), 0);
  },
});
