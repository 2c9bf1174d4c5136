// Likeness frontend extension: a common colour for Likeness nodes, the text each node reports (doctor report,
// direction ranges, identity scores, what happened to each face...) shown on the node after it runs, a visible
// warning when a face was missing and an input was passed through, and a "reset strengths" button on Edit
// Attributes (every strength back to 0, the exact identity).
//
// This file is served as /extensions/<pack folder>/js/likeness.js, so the frontend's public modules are three
// levels up (/scripts/app.js).
import { app } from "../../../scripts/app.js";

export const LIKENESS_COLOR = "#2d3e50";
export const LIKENESS_BGCOLOR = "#1e2a36";
const WARNING_COLOR = "#7a5200";
const WARNING_BGCOLOR = "#4d3600";
const INFO_WIDGET = "likeness_info";
const WARNING_WIDGET = "likeness_warning";

export function isLikenessClass(name) {
  return typeof name === "string" && name.startsWith("Likeness_");
}

// A widget that is neither saved in the workflow nor sent in the prompt (positional values stay aligned).
export function notSerialized(widget) {
  widget.serialize = false;
  widget.options = widget.options || {};
  widget.options.serialize = false;
  return widget;
}

function textBox(node, name, rows, style) {
  let widget = node.widgets?.find((w) => w.name === name);
  if (widget) return widget;
  const el = document.createElement("textarea");
  el.readOnly = true;
  el.rows = rows;
  el.spellcheck = false;
  el.className = `likeness-${name}`;
  Object.assign(el.style, {
    width: "100%",
    boxSizing: "border-box",
    resize: "none",
    fontFamily: "monospace",
    fontSize: "11px",
    lineHeight: "1.3",
    whiteSpace: "pre",
    overflow: "auto",
    border: "none",
    borderRadius: "4px",
    padding: "4px",
    background: "rgba(0,0,0,0.35)",
    color: "#ddd",
    ...style,
  });
  widget = node.addDOMWidget(name, "likeness_text", el, {
    hideOnZoom: false,
    getValue: () => el.value,
    setValue: (v) => {
      el.value = v ?? "";
    },
    getMinHeight: () => 16 * rows + 12,
  });
  widget.element = el;
  return notSerialized(widget);
}

// Grow the node (never shrink it) so a newly added widget is visible.
function fitNode(node) {
  const want = node.computeSize();
  node.setSize([Math.max(node.size[0], want[0]), Math.max(node.size[1], want[1])]);
  node.setDirtyCanvas(true, true);
}

function joined(value) {
  if (value == null) return "";
  return Array.isArray(value) ? value.filter((v) => v != null && v !== "").join("\n") : String(value);
}

// Show what a run reported: `text` (ui.PreviewText) and `likeness_warning` from the node's ui output.
export function showResults(node, output) {
  if (!output) return;
  const text = joined(output.text);
  const warning = joined(output.likeness_warning);
  let added = false;
  if (warning) {
    const w = textBox(node, WARNING_WIDGET, Math.min(4, warning.split("\n").length), {
      background: WARNING_BGCOLOR,
      color: "#ffd68a",
      fontWeight: "bold",
    });
    w.value = `\u26a0 ${warning}`;
    node.color = WARNING_COLOR;
    node.bgcolor = WARNING_BGCOLOR;
    added = true;
  } else if (node.widgets?.some((w) => w.name === WARNING_WIDGET)) {
    node.widgets.find((w) => w.name === WARNING_WIDGET).value = "";
    node.color = LIKENESS_COLOR;
    node.bgcolor = LIKENESS_BGCOLOR;
  }
  if (text) {
    const lines = text.split("\n").length;
    const w = textBox(node, INFO_WIDGET, Math.max(2, Math.min(12, lines)));
    w.value = text;
    added = true;
  }
  if (added) fitNode(node);
}

function addResetButton(node) {
  const button = node.addWidget("button", "reset strengths", null, () => {
    for (const widget of node.widgets || []) {
      if (widget.name && /(^|\.)strength_\d+$/.test(widget.name) && typeof widget.value === "number") {
        widget.value = 0;
        widget.callback?.(0);
      }
    }
    node.setDirtyCanvas(true, true);
  });
  notSerialized(button);
}

app.registerExtension({
  name: "likeness.nodes",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!isLikenessClass(nodeData.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const r = onExecuted?.apply(this, arguments);
      showResults(this, output);
      return r;
    };
  },
  nodeCreated(node) {
    if (!isLikenessClass(node.comfyClass)) return;
    node.color = node.color || LIKENESS_COLOR;
    node.bgcolor = node.bgcolor || LIKENESS_BGCOLOR;
    if (node.comfyClass === "Likeness_EditAttributes") addResetButton(node);
  },
  // Outputs restored from the queue/history (e.g. after reopening a tab) are shown as well.
  onNodeOutputsUpdated(nodeOutputs) {
    for (const [id, output] of Object.entries(nodeOutputs || {})) {
      if (String(id).includes(":")) continue; // inside a subgraph: shown when that subgraph is opened
      const node = app.rootGraph?.getNodeById?.(id) ?? app.graph?.getNodeById?.(id);
      if (node && isLikenessClass(node.comfyClass)) showResults(node, output);
    }
  },
});
