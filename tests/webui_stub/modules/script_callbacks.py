"""Stub: the settings and model-loaded callback lists."""
callbacks_ui_settings = []
callbacks_model_loaded = []


def on_ui_settings(callback, *, name=None):
    callbacks_ui_settings.append(callback)


def on_model_loaded(callback, *, name=None):
    callbacks_model_loaded.append(callback)


def ui_settings_callback():
    for c in callbacks_ui_settings:
        c()


def clear_callbacks():
    callbacks_ui_settings.clear()
    callbacks_model_loaded.clear()
