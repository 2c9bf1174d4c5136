// Likeness frontend extension: a common colour for Likeness nodes, and a
// "reset strengths" button on the attribute-editing node (every strength slider
// back to 0, the exact identity).
import { app } from "../../scripts/app.js";

const LIKENESS_COLOR = "#2d3e50";
const LIKENESS_BGCOLOR = "#1e2a36";

app.registerExtension({
  name: "likeness.nodes",
  nodeCreated(node) {
    const cls = node.comfyClass || "";
    if (!cls.startsWith("Likeness_")) {
      return;
    }
    node.color = node.color || LIKENESS_COLOR;
    node.bgcolor = node.bgcolor || LIKENESS_BGCOLOR;
    if (cls === "Likeness_EditAttributes") {
      const button = node.addWidget("button", "reset strengths", null, () => {
        for (const widget of node.widgets || []) {
          // slot widgets are named "edits.strength_<n>" (the node's dynamic slot count)
          if (widget.name && /(^|\.)strength_\d+$/.test(widget.name)) {
            widget.value = 0;
          }
        }
        node.setDirtyCanvas(true, true);
      });
      // Not a value: keep it out of saved widgets_values so positional values stay aligned.
      button.serialize = false;
      button.options = { ...(button.options || {}), serialize: false };
    }
  },
});
