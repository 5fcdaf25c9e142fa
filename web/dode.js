// D-ODE frontend extension: shows what the pack did, in the browser.
//  - "dode.status" websocket messages (sent by nodes/feedback.py for every *_dode sampler run, every dode scheduler
//    call, Distill λ, Save λ and auto-distill) become toasts of one short line (the message's "toast"; the whole
//    line is in ComfyUI's log): info for 6 s, warnings 12 s, errors 20 s.
//  - Distill λ's report (its "text" UI output) is shown on the node in a compact, scrollable, opaque panel. The panel
//    is a DOM widget with serialize off: it is not an input, so it is never in the prompt (ComfyUI's cache keeps
//    working) nor in saved workflows.
//  - Distill λ's seed starts "fixed" (control after generate), so queueing an unchanged graph reuses the fit.
//  - λ Files lists the entries of the λ files on the node, with a button that removes one (POST /dode/lambdas/remove).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const SEVERITY = { info: "info", warning: "warn", error: "error" };
const LIFE = { info: 6000, warning: 12000, error: 20000 };
const REPORT = "dode_report";
const ENTRIES = "dode_entries";
const PANEL_HEIGHT = 140; // px: the report scrolls inside it instead of growing the node over its neighbours

function toast(level, text) {
  const toasts = app.extensionManager?.toast;
  if (toasts?.add) {
    toasts.add({ severity: SEVERITY[level] ?? "info", summary: "D-ODE", detail: text, life: LIFE[level] ?? 6000 });
  } else {
    (level === "info" ? console.info : console.warn)("[dode]", text);
  }
}

function panel(node, name, height = PANEL_HEIGHT) {
  let widget = node.widgets?.find((w) => w.name === name);
  if (widget) return widget;
  const element = document.createElement("div");
  element.className = "dode-panel";
  element.dataset.dode = name;
  Object.assign(element.style, {
    fontFamily: "monospace", fontSize: "11px", lineHeight: "1.35", whiteSpace: "pre", overflow: "auto",
    background: "var(--comfy-input-bg, #222)", color: "var(--input-text, #ddd)", opacity: "1",
    border: "1px solid var(--border-color, #444)", borderRadius: "4px", padding: "4px 6px", boxSizing: "border-box",
    width: "100%", height: "100%",
  });
  // stop wheel scrolling from zooming the canvas while reading the report
  element.addEventListener("wheel", (event) => event.stopPropagation(), { passive: true });
  widget = node.addDOMWidget(name, "dode_panel", element, {
    serialize: false, // never in the prompt: not an input of the node
    hideOnZoom: true,
    getMinHeight: () => height,
    getMaxHeight: () => height,
    getHeight: () => height,
    getValue: () => element.textContent,
    setValue: (value) => { element.textContent = value ?? ""; },
  });
  widget.serialize = false; // never in saved workflows
  widget.element = element;
  // only as tall as the panel needs; never wider than the node already is (long lines scroll inside the panel)
  const size = node.computeSize?.();
  if (size) node.setSize?.([Math.max(node.size[0], 300), Math.max(node.size[1], size[1])]);
  return widget;
}

function showReport(node, text) {
  const widget = panel(node, REPORT);
  widget.element.textContent = text;
  node.setDirtyCanvas?.(true, true);
}

async function removeEntry(row, done) {
  if (!window.confirm(`Remove the λ entry ${row.title} from ${row.file}? The other entries stay.`)) return;
  let answer;
  try {
    const response = await api.fetchApi("/dode/lambdas/remove", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ file: row.file, id: row.id }),
    });
    answer = await response.json();
    if (!response.ok) throw new Error(answer?.error ?? `HTTP ${response.status}`);
  } catch (error) {
    toast("warning", `λ Files: could not remove ${row.title}: ${error.message ?? error}`);
    return;
  }
  done();
  toast("info", `λ Files: removed ${answer.title} from ${answer.file}; ${answer.left} entr${answer.left === 1 ? "y" : "ies"} left`);
}

function showEntries(node, rows, model) {
  const widget = panel(node, ENTRIES, 180);
  const element = widget.element;
  element.replaceChildren();
  element.style.whiteSpace = "normal";
  const head = document.createElement("div");
  const mine = rows.filter((r) => r.this_model).length;
  head.textContent = rows.length === 0 ? "no λ files yet — run Distill λ first"
    : `${rows.length} λ entr${rows.length === 1 ? "y" : "ies"}` + (model ? `; ${mine} for ${model} (bold)` : "");
  head.style.marginBottom = "4px";
  element.append(head);
  for (const row of rows) {
    const line = document.createElement("div");
    line.className = "dode-entry";
    Object.assign(line.style, { display: "flex", gap: "6px", alignItems: "center", whiteSpace: "nowrap" });
    const label = document.createElement("span");
    label.textContent = row.error ? `${row.file}: ${row.error}` : `${row.file}: ${row.title} — ${row.model}`;
    label.title = row.created ? `fitted ${row.created}` : "";
    if (row.this_model) label.style.fontWeight = "bold";
    label.style.flex = "1";
    line.append(label);
    if (!row.error) {
      const button = document.createElement("button");
      button.textContent = "✕";
      button.title = "Remove this entry from its λ file";
      button.className = "dode-remove";
      Object.assign(button.style, { cursor: "pointer", padding: "0 4px", fontSize: "11px" });
      button.addEventListener("click", () => removeEntry(row, () => showEntries(node, rows.filter((r) => r !== row), model)));
      line.append(button);
    }
    element.append(line);
  }
  node.setDirtyCanvas?.(true, true);
}

function fixSeed(node) {
  const seed = node.widgets?.find((w) => w.name === "seed");
  const control = seed?.linkedWidgets?.[0] ?? node.widgets?.find((w) => w.name?.includes?.("control_after_generate"));
  if (control) control.value = "fixed";
}

function afterExecuted(nodeType, show) {
  const onExecuted = nodeType.prototype.onExecuted;
  nodeType.prototype.onExecuted = function (message) {
    onExecuted?.apply(this, arguments);
    show(this, message ?? {});
  };
}

app.registerExtension({
  name: "dode.feedback",
  setup() {
    api.addEventListener("dode.status", (event) => {
      const data = event.detail ?? {};
      const text = data.toast ?? data.text;
      if (text) toast(data.level ?? "info", text);
    });
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name === "DODEDistillLambdas") {
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const result = onNodeCreated?.apply(this, arguments);
        fixSeed(this); // a saved workflow's own choice is restored after this, when it is loaded
        return result;
      };
      afterExecuted(nodeType, (node, message) => {
        const text = message.text?.join?.("\n");
        if (text) showReport(node, text);
      });
    } else if (nodeData?.name === "DODELambdaFiles") {
      afterExecuted(nodeType, (node, message) => {
        if (Array.isArray(message.dode_entries)) showEntries(node, message.dode_entries, message.dode_model?.[0]);
      });
    }
  },
});
