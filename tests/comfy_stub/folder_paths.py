"""Stub of ComfyUI's folder_paths (the names the dode pack uses)."""
import os
import tempfile

supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
base_path = os.environ.get("DODE_STUB_COMFY_BASE") or tempfile.mkdtemp(prefix="comfy_stub_")
models_dir = os.path.join(base_path, "models")
folder_names_and_paths = {
    "checkpoints": ([os.path.join(models_dir, "checkpoints")], supported_pt_extensions),
    "diffusion_models": ([os.path.join(models_dir, "unet"), os.path.join(models_dir, "diffusion_models")],
                         supported_pt_extensions),
}


def add_model_folder_path(folder_name, full_folder_path, is_default=False):
    if folder_name in folder_names_and_paths:
        paths = folder_names_and_paths[folder_name][0]
        if full_folder_path in paths:
            if is_default and paths[0] != full_folder_path:
                paths.remove(full_folder_path)
                paths.insert(0, full_folder_path)
        elif is_default:
            paths.insert(0, full_folder_path)
        else:
            paths.append(full_folder_path)
    else:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())  # no extension filter


def get_folder_paths(folder_name):
    return folder_names_and_paths[folder_name][0][:]


def _accepts(name, extensions):
    return not extensions or os.path.splitext(name)[1].lower() in extensions


def get_filename_list(folder_name):
    paths, extensions = folder_names_and_paths[folder_name]
    found = set()
    for folder in paths:
        if not os.path.isdir(folder):
            continue
        for root, _dirs, files in os.walk(folder, followlinks=True):
            for f in files:
                if _accepts(f, extensions):
                    found.add(os.path.relpath(os.path.join(root, f), folder).replace(os.sep, "/"))
    return sorted(found)


def get_full_path(folder_name, filename):
    if folder_name not in folder_names_and_paths:
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for folder in folder_names_and_paths[folder_name][0]:
        path = os.path.join(folder, filename)
        if os.path.isfile(path):
            return path
    return None
