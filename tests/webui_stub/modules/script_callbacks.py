"""Stub: the settings, model-loaded and app-started callback lists."""
callbacks_ui_settings = []
callbacks_model_loaded = []
callbacks_app_started = []


def on_ui_settings(callback, *, name=None):
    callbacks_ui_settings.append(callback)


def on_model_loaded(callback, *, name=None):
    callbacks_model_loaded.append(callback)


def on_app_started(callback, *, name=None):
    callbacks_app_started.append(callback)


def ui_settings_callback():
    for c in callbacks_ui_settings:
        c()


def clear_callbacks():
    callbacks_ui_settings.clear()
    callbacks_model_loaded.clear()
    callbacks_app_started.clear()
