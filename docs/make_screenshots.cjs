/*
 * Screenshots of the UI workflows for the README: docs/workflows/<name>.png.
 *
 * Loads each workflows/<name>.json into the real ComfyUI frontend (served by a running
 * ComfyUI with this pack and the smoke models, see tests/comfyui/conftest.py) in headless
 * Chromium, and also checks that the frontend's own graphToPrompt() of the loaded graph
 * equals workflows/api/<name>.json (printed as "frontend prompt == api twin").
 *
 * Prerequisites (this script installs nothing):
 *   apt-get install -y chromium                       # /usr/bin/chromium
 *   cd /some/scratch/dir && npm install playwright-core  # NOT inside the repository
 * Run from the repository root:
 *   NODE_PATH=/some/scratch/dir/node_modules node docs/make_screenshots.cjs http://127.0.0.1:8188
 * Options via environment: CHROMIUM (default /usr/bin/chromium), WIDTH/HEIGHT (1400x900).
 * The server's input folder should hold likeness_face.png / likeness_expression.png so the
 * Load Image previews show a face (copy any photo; never commit it).
 */
"use strict";
const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

const server = process.argv[2] || "http://127.0.0.1:8188";
const root = path.resolve(__dirname, "..");
const width = Number(process.env.WIDTH || 1400);
const height = Number(process.env.HEIGHT || 900);

function sameApi(a, b) {
  const norm = (p) => JSON.stringify(Object.keys(p).sort().map((k) => [k, p[k].class_type,
    Object.keys(p[k].inputs).sort().map((i) => [i, p[k].inputs[i]]), (p[k]._meta || {}).title]));
  return norm(a) === norm(b);
}

(async () => {
  const userDir = fs.mkdtempSync(path.join(require("os").tmpdir(), "likeness-chromium-"));
  const browser = await chromium.launchPersistentContext(userDir, {  // a fresh --user-data-dir
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width, height },
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--disable-sync", "--no-first-run"],
  });
  const page = browser.pages()[0] || (await browser.newPage());
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(server, { waitUntil: "networkidle" });
  await page.waitForFunction(() => window.app && window.app.graph && window.app.canvas, null, { timeout: 120000 });
  await page.evaluate(async () => {  // full-detail rendering at small zoom, no minimap
    const settings = window.app.extensionManager && window.app.extensionManager.setting;
    for (const [key, value] of [["LiteGraph.Canvas.MinFontSizeForLOD", 1], ["Comfy.Minimap.Visible", false]]) {
      try { if (settings) await settings.set(key, value); } catch (e) { console.warn(key, e.message); }
    }
  });
  let failures = 0;
  const files = fs.readdirSync(path.join(root, "workflows")).filter((f) => f.endsWith(".json")).sort();
  for (const file of files) {
    const ui = JSON.parse(fs.readFileSync(path.join(root, "workflows", file), "utf8"));
    const api = JSON.parse(fs.readFileSync(path.join(root, "workflows", "api", file), "utf8"));
    await page.keyboard.press("Escape");  // close any dialog (templates, missing models)
    const prompt = await page.evaluate(async (graph) => {
      await window.app.loadGraphData(graph, true, true, "screenshot");
      const xs = graph.nodes.map((n) => n.pos[0]).concat(graph.groups.map((g) => g.bounding[0]));
      const ys = graph.nodes.map((n) => n.pos[1] - 30).concat(graph.groups.map((g) => g.bounding[1]));
      const x1 = Math.max(...graph.nodes.map((n) => n.pos[0] + n.size[0]), ...graph.groups.map((g) => g.bounding[0] + g.bounding[2]));
      const y1 = Math.max(...graph.nodes.map((n) => n.pos[1] + n.size[1]), ...graph.groups.map((g) => g.bounding[1] + g.bounding[3]));
      const [left, top] = [70, 50];  // sidebar and tab bar
      const scale = Math.min((window.innerWidth - left - 20) / (x1 - Math.min(...xs)), (window.innerHeight - top - 20) / (y1 - Math.min(...ys)));
      window.app.canvas.low_quality_zoom_threshold = 0.1;
      window.app.canvas.ds.scale = scale;
      window.app.canvas.ds.offset = [left / scale - Math.min(...xs), top / scale - Math.min(...ys)];
      window.app.canvas.setDirty(true, true);
      return (await window.app.graphToPrompt()).output;
    }, ui);
    await page.waitForTimeout(1500);
    await page.keyboard.press("Escape");
    await page.waitForTimeout(300);
    const ok = sameApi(prompt, api);
    if (!ok) {
      failures += 1;
      console.error(`${file}: frontend prompt differs from api twin:\n${JSON.stringify(prompt)}`);
    }
    const out = path.join(root, "docs", "workflows", file.replace(/\.json$/, ".png"));
    await page.screenshot({ path: out });
    console.log(`${out}: ${fs.statSync(out).size} bytes; frontend prompt == api twin: ${ok}`);
  }
  await browser.close();
  fs.rmSync(userDir, { recursive: true, force: true });
  process.exit(failures ? 1 : 0);
})();
