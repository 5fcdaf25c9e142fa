"""End-to-end in a real browser: the "D-ODE λ files" accordion of A1111 1.10's txt2img page, driven through the DOM.

Skipped unless WEBUI_DIR points at a WebUI checkout whose environment is installed (as tests/test_webui_e2e.py) and
DODE_E2E_CHROMIUM names a Chromium binary. WEBUI_PYTHON and WEBUI_ARGS as in tests/test_webui_e2e.py.

The WebUI starts with its Gradio UI (no ``--nowebui``) on CPU, without loading a model, with ``--data-dir`` in a
temporary folder laid out as test_webui_e2e.py's ``server`` fixture does (extensions/dode linked to this repo, a dummy
checkpoint and its λ sidecar) plus models/D-ODE/listed.safetensors with two entries, written before the page loads.
Two things a plain ``launch.py --skip-prepare-environment`` lacks are supplied without touching WEBUI_DIR: the UI
mounts repositories/stable-diffusion-webui-assets (cloned by the skipped prepare step), so when it is missing the
launcher points ``launch_utils.repo_dir`` for it at an empty temporary folder; and Gradio serves the WebUI's
script.js only from its working directory or an allowed path, so ``--gradio-allowed-path WEBUI_DIR`` is passed (the
working directory is the data dir).

Headless Chromium is driven over the DevTools protocol (tests/webui_e2e/cdp.py, standard library only) with real
mouse clicks and typed text. The tests run in order on one page: the accordion lists both entries; choosing one in
"Entry to remove" and pressing Remove removes it (status line, table, file on disk); Refresh shows a file written
afterwards.

A second WebUI (fixture ``generating``, its own data dir, Settings at their defaults) loads a checkpoint at start:
WEBUI_CKPT, else the tiny random SD1 checkpoint test_webui_e2e.py builds for WEBUI_E2E_TXT2IMG, with the CLIP
tokenizer folder it writes in the working directory. In its txt2img tab the sampler "Euler (D-ODE)", the schedule
type "D-ODE fitted", 4 steps and 64×64 are set through the dropdowns and sliders and Generate is pressed: with no fit
and auto-distill off, the comments under the image (A1111's ``p.comments``, below the generation info) say that the
stock Karras schedule and the stock sampler ran and what to turn on, and the infotext says "D-ODE schedule: Karras
(no fit)" and "D-ODE λ: none"; after a damaged models/D-ODE/broken.safetensors is written, the next Generate names
it there too."""
import contextlib
import json
import os
import shlex

import pytest

from test_webui_e2e import (DEFAULT_ARGS, add_dummy_checkpoint, core_package, field, free_port, linked_data_dir,
                             running_webui, webui_python, write_clip_folder, write_random_checkpoint)
from webui_e2e.cdp import Browser, DevToolsError

WEBUI_DIR = os.environ.get("WEBUI_DIR")
CHROMIUM = os.environ.get("DODE_E2E_CHROMIUM")
pytestmark = pytest.mark.skipif(not (WEBUI_DIR and CHROMIUM),
                                reason="set WEBUI_DIR and DODE_E2E_CHROMIUM to run the browser e2e test")

LAUNCH = """
import os, runpy, sys
webui, assets = sys.argv[1:3]
sys.argv = [os.path.join(webui, "launch.py")] + sys.argv[3:]
sys.path.insert(0, webui)
from modules import launch_utils
stock = launch_utils.repo_dir
def repo_dir(name):
    real = stock(name)
    return assets if name == "stable-diffusion-webui-assets" and not os.path.isdir(real) else real
launch_utils.repo_dir = repo_dir
runpy.run_path(sys.argv[0], run_name="__main__")
"""

ACCORDION = "gradioApp().querySelector('#tab_txt2img .gradio-accordion.dode-lambda-files')"
ROWS = (f"(() => {{ const t = {ACCORDION}.querySelector('table.dode-lambda-files');"
        " return t ? Array.from(t.querySelectorAll('tr')).slice(1)"
        ".map(r => Array.from(r.cells).map(c => c.innerText.trim())) : null; })()")
STATUS = f"{ACCORDION}.querySelector('.gradio-markdown').innerText.trim()"
OPTIONS = (f"Array.from({ACCORDION}.querySelectorAll('.gradio-dropdown ul.options li.item'))"
           ".map(li => li.getAttribute('data-value'))")


def entry(core, sampler, steps, cfg, model):
    sigmas = core.samplers.karras_sigmas(steps)
    return core.lambdas.LambdaEntry(sampler=sampler, sigmas=sigmas, model=model, cfg=cfg,
                                    lambdas=[0.1] * core.samplers.nfe(sampler, sigmas))


@contextlib.contextmanager
def ui_server(tmp_path_factory, webui_dir, python, data, ready, what, extra_args=()):
    """Starts the WebUI with its UI (working directory ``data``), opens its page in headless Chromium, waits for the
    JavaScript expression ``ready`` and yields (base URL, log path, Browser); stops both afterwards."""
    assets = tmp_path_factory.mktemp("webui-assets")
    port = free_port()
    args = [python, "-c", LAUNCH, webui_dir, str(assets), "--skip-prepare-environment", "--no-download-sd-model",
            "--port", str(port), "--data-dir", str(data), "--gradio-allowed-path", webui_dir, *extra_args,
            *shlex.split(os.environ.get("WEBUI_ARGS", DEFAULT_ARGS))]
    log_path = data / "webui.log"
    base = f"http://127.0.0.1:{port}"
    with running_webui(args, str(data), log_path, base + "/"):
        browser = Browser(CHROMIUM, str(tmp_path_factory.mktemp("chromium-profile")), free_port())
        try:
            browser.call("Page.navigate", url=base + "/")
            try:
                browser.wait_for(ready, timeout=180, what=what)
            except DevToolsError as e:
                shot = data / "page.png"
                browser.screenshot(shot)
                pytest.fail(f"{e}; screenshot {shot}; page text:\n"
                            f"{browser.evaluate('document.body.innerText.slice(0, 2000)')}\n"
                            f"{log_path.read_text()[-3000:]}")
            yield base, log_path, browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    """The WebUI with its UI, and a headless Chromium page on its txt2img tab."""
    webui_dir = os.path.abspath(WEBUI_DIR)
    data = linked_data_dir(tmp_path_factory, "webui-ui-data")
    core = core_package()
    add_dummy_checkpoint(data, core)
    folder = data / "models" / "D-ODE"
    folder.mkdir(parents=True)
    core.lambdas.save_lambdas(folder / "listed.safetensors", [entry(core, "heun", 4, 3.0, "0123456789"),
                                                              entry(core, "euler", 5, 7.0, "abcdef0123")])
    ready = f"!!(window.gradioApp && {ACCORDION.replace('gradioApp()', 'window.gradioApp()')})"
    with ui_server(tmp_path_factory, webui_dir, webui_python(webui_dir), data, ready,
                   "the txt2img tab's D-ODE λ files accordion", ["--skip-load-model-at-start"]) as (base, log, page):
        yield type("WebUI", (), {"base": base, "data": data, "log": log, "page": page, "core": core,
                                 "folder": folder})


def center(page, selector, text=None):
    """Scrolls the first element under the accordion matching ``selector`` (and, if given, whose trimmed text is
    ``text``) into view and returns its centre in page coordinates."""
    found = page.evaluate(
        f"(() => {{ const e = Array.from({ACCORDION}.querySelectorAll({json.dumps(selector)}))"
        f".find(e => {json.dumps(text)} === null || e.textContent.trim() === {json.dumps(text)});"
        " if (!e) return null; e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
        " return [r.x + r.width / 2, r.y + r.height / 2, r.width * r.height]; })()")
    assert found and found[2] > 0, f"no visible {selector!r} {text or ''} in the accordion:\n{accordion_html(page)}"
    return found[:2]


def click(page, selector, text=None):
    page.click_at(*center(page, selector, text))


def accordion_html(page):
    return page.evaluate(f"{ACCORDION}.outerHTML").replace("><", ">\n<")[:6000]


def wait(page, expression, what, server, timeout=60):
    try:
        return page.wait_for(expression, timeout=timeout, what=what)
    except DevToolsError as e:
        pytest.fail(f"{e}\nthe accordion:\n{accordion_html(page)}\nthe server log:\n{server.log.read_text()[-3000:]}")


def test_the_accordion_lists_both_entries(webui):
    page = webui.page
    label = page.evaluate(f"{ACCORDION}.querySelector('.label-wrap').innerText.trim()")
    assert label.startswith("D-ODE λ files"), label
    table_visible = (f"(() => {{ const t = {ACCORDION}.querySelector('table.dode-lambda-files');"
                     " return !!t && t.offsetParent !== null; })()")
    assert not page.evaluate(table_visible)  # closed at first
    click(page, ".label-wrap")
    wait(page, table_visible, "the λ table to show", webui)
    rows = page.evaluate(ROWS)
    assert [(r[1], r[2]) for r in rows] == [("listed.safetensors", "heun, 4 steps, cfg 3"),
                                            ("listed.safetensors", "euler, 5 steps, cfg 7")], rows
    assert "lambda_files.py" not in webui.log.read_text()  # building the list loads no model (no traceback through it)
    assert all(r[0] == "" for r in rows), rows  # neither is marked for the (unloaded) checkpoint


def offered(server):
    """The choices "Entry to remove" lists when its input is clicked; the list is then closed with Escape and the
    input left by clicking the table (a focused input does not reopen its list on a click)."""
    page = server.page
    click(page, ".gradio-dropdown input")
    wait(page, f"{OPTIONS}.length > 0", "the dropdown's options", server, timeout=10)
    choices = page.evaluate(OPTIONS)
    page.press("Escape")
    click(page, "table.dode-lambda-files")
    wait(page, f"document.activeElement !== {ACCORDION}.querySelector('.gradio-dropdown input')",
         "the dropdown to lose focus", server, timeout=10)
    return choices


def choose(server, label, typed):
    """Picks ``label`` in "Entry to remove" as a user does: clicks the input, types ``typed`` (which filters the
    list), clicks the option."""
    page = server.page
    click(page, ".gradio-dropdown input")
    wait(page, f"{OPTIONS}.length > 0", "the dropdown's options", server, timeout=10)
    page.type_text(typed)
    wait(page, f"{OPTIONS}.includes({json.dumps(label)})", f"option {label!r} after typing {typed!r}", server, 10)
    click(page, f".gradio-dropdown ul.options li.item[data-value={json.dumps(label, ensure_ascii=False)}]")
    wait(page, f"{ACCORDION}.querySelector('.gradio-dropdown input').value === {json.dumps(label)}",
         f"the dropdown to show {label!r}", server, 10)


def test_remove_an_entry(webui):
    page = webui.page
    choices = offered(webui)
    heun = [c for c in choices if " · heun, 4 steps, cfg 3 · " in c]
    assert len(choices) == 2 and len(heun) == 1 and all(c.startswith("listed.safetensors · ") for c in choices), \
        choices
    choose(webui, heun[0], "heun")
    click(page, "button", "Remove")
    expected = "Removed heun, 4 steps, cfg 3 from listed.safetensors (1 left)."
    wait(page, f"{STATUS} === {json.dumps(expected)}", f"the status {expected!r}", webui)
    rows = page.evaluate(ROWS)
    assert [(r[1], r[2]) for r in rows] == [("listed.safetensors", "euler, 5 steps, cfg 7")], rows
    left = webui.core.lambdas.load_lambdas(webui.folder / "listed.safetensors")
    assert [(e.sampler, e.steps, e.cfg) for e in left] == [("euler", 5, 7.0)]
    assert page.evaluate(f"{ACCORDION}.querySelector('.gradio-dropdown input').value") == ""  # value reset


def test_refresh_shows_a_new_file(webui):
    page = webui.page
    core = webui.core
    core.lambdas.save_lambdas(webui.folder / "fresh.safetensors", [entry(core, "euler", 6, 5.0, "fedcba9876")])
    assert not any(r[1] == "fresh.safetensors" for r in page.evaluate(ROWS))  # not before Refresh
    click(page, "button", "Refresh")
    wait(page, f"{ROWS}.some(r => r[1] === 'fresh.safetensors')", "fresh.safetensors in the table", webui)
    rows = sorted((r[1], r[2]) for r in page.evaluate(ROWS))
    assert rows == [("fresh.safetensors", "euler, 6 steps, cfg 5"), ("listed.safetensors", "euler, 5 steps, cfg 7")]
    assert page.evaluate(STATUS) == ""  # Refresh clears the last status line
    choices = sorted(c.rsplit(" · ", 1)[0] for c in offered(webui))
    assert choices == ["fresh.safetensors · euler, 6 steps, cfg 5", "listed.safetensors · euler, 5 steps, cfg 7"]


@pytest.fixture(scope="module")
def generating(tmp_path_factory):
    """The WebUI with its UI and a loaded checkpoint (WEBUI_CKPT, else the tiny random SD1 checkpoint that
    test_webui_e2e.py builds for WEBUI_E2E_TXT2IMG, with the CLIP tokenizer folder in the working directory),
    Settings at their defaults, and a headless Chromium page on its txt2img tab."""
    webui_dir = os.path.abspath(WEBUI_DIR)
    python = webui_python(webui_dir)
    data = linked_data_dir(tmp_path_factory, "webui-ui-txt2img")
    ckpt = os.environ.get("WEBUI_CKPT")
    if not ckpt:
        ckpt = tmp_path_factory.mktemp("webui-ui-ckpt") / "random-tiny.safetensors"
        write_random_checkpoint(ckpt, webui_dir, python, tiny=True)
    write_clip_folder(str(data), python)  # the working directory is the data dir
    ready = ("!!(window.gradioApp && window.gradioApp().querySelector('#txt2img_generate')"
             " && window.gradioApp().querySelector('#txt2img_sampling input'))")
    with ui_server(tmp_path_factory, webui_dir, python, data, ready, "the txt2img tab's Generate button",
                   ["--ckpt", str(ckpt), "--do-not-download-clip", "--disable-nan-check"]) as (base, log, page):
        yield type("Generating", (), {"base": base, "data": data, "log": log, "page": page,
                                      "folder": data / "models" / "D-ODE"})


def app(selector):
    return f"gradioApp().querySelector({json.dumps(selector)})"


def point(page, selector):
    """Scrolls the element ``selector`` (in the Gradio app) into view and returns its centre."""
    found = page.evaluate(
        f"(() => {{ const e = {app(selector)}; if (!e) return null; e.scrollIntoView({{block: 'center'}});"
        " const r = e.getBoundingClientRect();"
        " return [r.x + r.width / 2, r.y + r.height / 2, r.width * r.height]; })()")
    assert found and found[2] > 0, f"no visible {selector!r} on the page"
    return found[:2]


def until(server, expression, what, timeout=30):
    try:
        return server.page.wait_for(expression, timeout=timeout, what=what)
    except DevToolsError as e:
        pytest.fail(f"{e}\nthe page's results:\n{results_text(server.page)}\nthe server log:\n"
                    f"{server.log.read_text()[-4000:]}")


def results_text(page):
    return page.evaluate(f"(() => {{ const e = {app('#txt2img_results')}; return e ? e.innerText : null; }})()")


def replace_text(page, selector, text):
    """Clicks the input ``selector``, selects what it holds and types ``text`` over it."""
    page.click_at(*point(page, selector))
    page.evaluate("document.activeElement.select()")
    page.type_text(text)


def set_dropdown(server, elem_id, value, typed):
    """Picks ``value`` in the dropdown ``#elem_id`` as a user does: clicks it, types ``typed`` over its text (which
    filters the list), clicks the option."""
    page = server.page
    options = f"Array.from({app(f'#{elem_id} ul.options')}?.querySelectorAll('li.item') || [])" \
              ".map(li => li.getAttribute('data-value'))"
    replace_text(page, f"#{elem_id} input", typed)
    until(server, f"{options}.includes({json.dumps(value)})", f"option {value!r} in #{elem_id}", 10)
    page.click_at(*point(page, f"#{elem_id} ul.options li.item[data-value={json.dumps(value, ensure_ascii=False)}]"))
    until(server, f"{app(f'#{elem_id} input')}.value === {json.dumps(value)}", f"#{elem_id} to show {value!r}", 10)


def set_slider(server, elem_id, value):
    """Types ``value`` into the number box of the slider ``#elem_id`` and leaves it with Tab."""
    page = server.page
    replace_text(page, f"#{elem_id} input[type=number]", str(value))
    page.press("Tab", keycode=9)
    until(server, f"{app(f'#{elem_id} input[type=range]')}.value === {json.dumps(str(value))}",
          f"#{elem_id} at {value}", 10)


def generate_in_page(server, prompt):
    """Types ``prompt``, presses Generate and returns (the infotext's lines, the comments block's lines) once the
    infotext of this generation (which starts with ``prompt``) is shown."""
    page = server.page
    replace_text(page, "#txt2img_prompt textarea", prompt)
    # while a job runs (and until the page's progress polling ends) Interrupt and Skip cover the Generate button
    covers = "['#txt2img_interrupt', '#txt2img_skip', '#txt2img_interrupting']"
    idle = (f"{covers}.every(s => {{ const e = gradioApp().querySelector(s);"
            " return !e || e.style.display !== 'block'; })")
    until(server, idle, "the Generate button to be uncovered (no job running)", timeout=120)
    x, y = point(page, "#txt2img_generate")
    hit = f"!!document.elementFromPoint({x}, {y})?.closest('#txt2img_generate')"
    assert page.evaluate(hit), page.evaluate(f"document.elementFromPoint({x}, {y})?.outerHTML")
    page.click_at(x, y)
    done = (f"(() => {{ const info = {app('#html_info_txt2img')}, log = {app('#html_log_txt2img')};"
            " const error = log && log.querySelector('.error');"
            " if (error) return 'error: ' + error.innerText;"
            f" return info && info.innerText.startsWith({json.dumps(prompt)}) ? 'done' : null; }})()")
    state = until(server, done, f"the generation of {prompt!r} to finish", timeout=300)
    assert state == "done", f"{state}\n{server.log.read_text()[-4000:]}"
    info = page.evaluate(f"{app('#html_info_txt2img')}.innerText")
    comments = page.evaluate(f"(() => {{ const c = {app('#html_log_txt2img p.comments')};"
                             " return c ? c.innerText : null; })()")
    split = lambda text: [line.strip() for line in (text or "").splitlines() if line.strip()]  # noqa: E731
    return split(info), split(comments)


HOW_TO_FIT = 'turn on Settings → D-ODE → "Auto-distill λ" and generate again to fit one'
SCHEDULE_MESSAGE = ("D-ODE fitted: this image used the stock Karras schedule: no fitted schedule for this checkpoint, "
                    f"sampler, steps and CFG scale; {HOW_TO_FIT}.")
SAMPLER_MESSAGE = ("D-ODE: Euler (D-ODE) ran as the stock sampler (λ = 0): no λ fitted for this checkpoint, steps, "
                   f"schedule type and CFG scale; {HOW_TO_FIT}.")


def test_txt2img_shows_d_ode_messages_under_the_image(generating):
    """Euler (D-ODE) on "D-ODE fitted" with no fit and auto-distill off: the comments under the image say that the
    stock Karras schedule and the stock sampler ran and what to turn on; then a damaged λ file in models/D-ODE is
    named there too."""
    server = generating
    set_dropdown(server, "txt2img_sampling", "Euler (D-ODE)", "(D-ODE)")
    set_dropdown(server, "txt2img_scheduler", "D-ODE fitted", "fitted")
    set_slider(server, "txt2img_steps", 4)
    set_slider(server, "txt2img_width", 64)
    set_slider(server, "txt2img_height", 64)

    info, comments = generate_in_page(server, "a photo of a cat")
    params = info[-1]
    assert field(params, "Sampler") == "Euler (D-ODE)" and field(params, "Schedule type") == "D-ODE fitted", info
    assert field(params, "Steps") == "4" and field(params, "Size") == "64x64", info
    assert field(params, "D-ODE schedule") == "Karras (no fit)" and field(params, "D-ODE λ") == "none", info
    assert field(params, "D-ODE fit") is None, info
    dode = [line for line in comments if line.startswith("D-ODE")]
    assert dode == [SCHEDULE_MESSAGE, SAMPLER_MESSAGE], comments
    assert not any(line.startswith("D-ODE") for line in info), info  # the messages are not in the infotext

    server.folder.mkdir(parents=True, exist_ok=True)
    (server.folder / "broken.safetensors").write_bytes(b"garbage, not a safetensors file")
    info, comments = generate_in_page(server, "a photo of a dog")
    assert field(info[-1], "D-ODE schedule") == "Karras (no fit)" and field(info[-1], "D-ODE λ") == "none", info
    skipped = [line for line in comments if line.startswith("D-ODE: skipped the λ file ")]
    assert len(skipped) == 1 and skipped[0].startswith("D-ODE: skipped the λ file broken.safetensors: "), comments
    assert skipped[0].startswith("D-ODE: skipped the λ file broken.safetensors: not a readable safetensors file"), \
        skipped  # its name, not its path on the server
    assert SCHEDULE_MESSAGE in comments and SAMPLER_MESSAGE in comments, comments
