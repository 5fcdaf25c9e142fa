"""webui/identity.py: the AutoV2 hash (also under --no-hashing) and extra networks."""
import sys
from types import SimpleNamespace

from webui_host import PKG, karras, make_p, run, save_entry


def test_no_hashing_hashes_the_file_once(webui, monkeypatch):
    webui.info.sha256 = webui.info.shorthash = None
    webui.shared.cmd_opts.no_hashing = True
    sigmas = karras(5)
    save_entry(webui, webui.tmp / "models" / "D-ODE" / "x.safetensors", "euler", sigmas, model=webui.ident)
    p = make_p()
    run(webui, "Euler (D-ODE)", p, sigmas)
    assert p.extra_generation_params["D-ODE λ"] == "x.safetensors#0"
    assert (webui.tmp / "models" / "D-ODE" / "sha256-cache.json").is_file()
    store = sys.modules[PKG + ".lambdas.identity"]
    store._hash_memo.clear()  # a restart: the disk cache answers, the file is not read again
    monkeypatch.setattr(store, "hashlib", None)
    assert webui.ext.identity.checkpoint(p)[0] == webui.ident


def test_extra_networks_are_part_of_the_identity(webui):
    sigmas = karras(6)
    lora = {"lora": [SimpleNamespace(items=["detail_slider", "0.8"])]}
    ident_lora, _ = webui.ext.identity.identity(make_p(extra_network_data=lora))
    assert ident_lora.startswith(webui.ident + "+nets-")
    assert webui.ext.identity.identity(make_p(extra_network_data={"lora": [SimpleNamespace(items=["detail_slider", "1"])]}))[0] != ident_lora
    folder = webui.tmp / "models" / "D-ODE"
    save_entry(webui, folder / "lora.safetensors", "euler", sigmas, model=ident_lora)
    bare = make_p()
    run(webui, "Euler (D-ODE)", bare, sigmas)
    assert bare.extra_generation_params["D-ODE λ"] == "none"
    with_lora = make_p(extra_network_data=lora)
    run(webui, "Euler (D-ODE)", with_lora, sigmas)
    assert with_lora.extra_generation_params["D-ODE λ"] == "lora.safetensors#0"
