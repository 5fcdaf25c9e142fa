// D-ODE frontend extension: shows what the pack did, in the browser.
//  - "dode.status" websocket messages (sent by nodes/feedback.py for every *_dode sampler run, every dode scheduler
//    call, Distill λ and auto-distill) become toasts: info for 6 s, warnings and errors for 15 s.
//  - Distill λ's report (its "text" UI output) is shown on the node itself, in a read-only text box.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const SEVERITY = { info: "info", warning: "warn", error: "error" };
const REPORT = "dode_report";

function toast(level, text) {
  const toasts = app.extensionManager?.toast;
  if (toasts?.add) {
    toasts.add({ severity: SEVERITY[level] ?? "info", summary: "D-ODE", detail: text,
                 life: level === "info" ? 6000 : 15000 });
  } else {
    (level === "info" ? console.info : console.warn)("[dode]", text);
  }
}

function showReport(node, text) {
  let widget = node.widgets?.find((w) => w.name === REPORT);
  if (!widget) {
    widget = ComfyWidgets.STRING(node, REPORT, ["STRING", { multiline: true }], app).widget;
    widget.serialize = false; // not an input: kept out of saved workflows and prompts
    if (widget.inputEl) {
      widget.inputEl.readOnly = true;
      widget.inputEl.style.fontFamily = "monospace";
      widget.inputEl.style.opacity = 0.85;
    }
  }
  widget.value = text;
  node.setSize?.([Math.max(node.size[0], 480), Math.max(node.size[1], node.computeSize()[1] + 160)]);
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "dode.feedback",
  setup() {
    api.addEventListener("dode.status", (event) => {
      const data = event.detail ?? {};
      if (data.text) toast(data.level ?? "info", data.text);
    });
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== "DODEDistillLambdas") return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = message?.text?.join?.("\n");
      if (text) showReport(this, text);
    };
  },
});
