"""Stub: the WebUI's model-folder scan (``load_models``), which returns every file the folder holds."""
found = []  # the files the scan finds (sd_models.models_files is this list)


def load_models(model_path, model_url=None, command_path=None, ext_filter=None, download_name=None,
                ext_blacklist=None, hash_prefix=None):
    return list(found)
