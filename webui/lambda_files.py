"""The λ files the WebUI reads (models/D-ODE and the loaded checkpoint's sidecar): their entries, marked for the loaded
checkpoint, and removing one; shown in the "D-ODE λ files" accordion of txt2img/img2img and over the API."""
import html
import os

from ..lambdas import catalog
from .identity import checkpoint
from .sources import stores

ROUTE = "/dode/v1/lambdas"


def places(info):
    """``(name, path, store)`` of every λ file: models/D-ODE's, then the checkpoint's sidecar if there is one."""
    return [(os.path.basename(path), path, store) for store in stores(info) for path in store.paths()]


def rows():
    """One row per entry (lambdas/catalog.py); ``this_model``: it serves the loaded checkpoint."""
    short, info = checkpoint(None)
    return [row for name, path, store in places(info)
            for row in catalog.entry_rows(store, [(name, path)], None if short is None else [short])]


def remove(name, wanted):
    """Removes entry ``wanted`` (its id) from the listed λ file ``name``; LookupError if there is no such one."""
    _, info = checkpoint(None)
    for listed, path, store in places(info):
        if listed == name:
            return catalog.remove_entry(store, name, path, wanted)
    raise LookupError(f"no λ file {name!r} in models/D-ODE or beside the loaded checkpoint")


def choice(row):
    """The dropdown label of an entry row: ``<file> · <title> · <id>``."""
    return f"{row['file']} · {row['title']} · {row['id']}"


def table(rows_):
    """The entries as an HTML table, the loaded checkpoint's first and marked; a line when there are none."""
    if not rows_:
        return "<p>No λ files yet: generate with a D-ODE sampler and Settings → D-ODE → Auto-distill λ on.</p>"
    ordered = sorted(rows_, key=lambda r: not r.get("this_model"))
    cells = "".join(
        f"<tr><td>{'✓' if r.get('this_model') else ''}</td><td>{html.escape(r['file'])}</td>"
        f"<td>{html.escape(r.get('title') or r.get('error', ''))}</td><td>{html.escape(r.get('model', ''))}</td>"
        f"<td>{html.escape(r.get('created', ''))}</td></tr>" for r in ordered)
    return ("<table class='dode-lambda-files'><tr><th>this checkpoint</th><th>file</th><th>entry</th><th>model</th>"
            f"<th>created</th></tr>{cells}</table>")


def removable(rows_):
    return [choice(r) for r in rows_ if "id" in r]


def remove_choice(label):
    """Removes the entry a dropdown label names; a line that says what happened."""
    if not label:
        return "Choose an entry to remove."
    name, _, wanted = label.rsplit(" · ", 2)
    try:
        removed = remove(name, wanted)
    except (LookupError, OSError, ValueError) as e:
        return f"Not removed: {e}"
    return f"Removed {removed['title']} from {removed['file']} ({removed['left']} left)."


def build_ui():
    """The "D-ODE λ files" accordion: the table, a refresh button, an entry to remove and its button."""
    import gradio as gr

    def refresh(status=""):
        current = rows()
        return table(current), gr.update(choices=removable(current), value=None), status

    current = rows()
    with gr.Accordion("D-ODE λ files", open=False, elem_classes=["dode-lambda-files"]):
        listing = gr.HTML(table(current))
        with gr.Row():
            entry = gr.Dropdown(label="Entry to remove", choices=removable(current))
            refresh_button = gr.Button("Refresh")
            remove_button = gr.Button("Remove", variant="stop")
        status = gr.Markdown("")
    refresh_button.click(fn=refresh, inputs=[], outputs=[listing, entry, status])
    remove_button.click(fn=lambda label: refresh(remove_choice(label)), inputs=[entry],
                        outputs=[listing, entry, status])


def remove_request(body):
    """``(status, payload)`` for a remove request ``body`` (``{"file", "id"}``): 200 and what was removed, or 400 and
    ``{"error"}``."""
    if not isinstance(body, dict):
        return 400, {"error": "expected a JSON object with file and id"}
    try:
        return 200, remove(body.get("file"), body.get("id"))
    except (LookupError, OSError, ValueError) as e:
        return 400, {"error": str(e)}


def add_routes(_, app):
    """``GET /dode/v1/lambdas``: the rows; ``POST /dode/v1/lambdas/remove``: ``remove_request`` (on_app_started)."""
    from fastapi import Body
    from fastapi.responses import JSONResponse

    @app.get(ROUTE)
    def list_route():
        return {"rows": rows()}

    @app.post(ROUTE + "/remove")
    def remove_route(body: dict = Body(...)):
        status, payload = remove_request(body)
        return JSONResponse(payload, status_code=status)
