"""webui/checkpoint_list.py: λ sidecars stay out of the WebUI's checkpoint list."""
from webui_host import load_script


def test_sidecars_are_not_listed_as_checkpoints(webui):
    from modules import sd_models
    sd_models.models_files[:] = ["/m/toy.safetensors", "/m/toy.dode.safetensors"]
    loader = sd_models.modelloader
    loader.load_models = loader.load_models.__wrapped__
    sd_models.list_models.__wrapped__()  # the list the WebUI built before the script loaded
    assert "toy.dode.safetensors" in sd_models.checkpoints_list
    webui.ext.checkpoint_list.hide_sidecars()
    assert list(sd_models.checkpoints_list) == ["toy.safetensors"]
    assert set(sd_models.checkpoint_aliases) == {"toy.safetensors", "toy"}
    sd_models.opened.clear()
    sd_models.list_models()  # a refresh
    assert list(sd_models.checkpoints_list) == ["toy.safetensors"]
    assert sd_models.opened == ["/m/toy.safetensors"]  # a damaged sidecar is never opened by the scan
    load_script()  # Reload UI: wrapped once only
    assert not getattr(sd_models.list_models.__wrapped__, "dode_prunes_sidecars", False)
    assert not getattr(sd_models.modelloader.load_models.__wrapped__, "dode_drops_sidecars", False)
