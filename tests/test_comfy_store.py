"""nodes/store.py: the λ folder models/dode_lambdas and extra_model_paths."""



def test_lambda_folder_keeps_extra_model_paths(cx, tmp_path):
    fp = cx.folder_paths
    saved = fp.folder_names_and_paths.pop("dode_lambdas")
    try:
        fp.add_model_folder_path("dode_lambdas", str(tmp_path / "shared"), is_default=True)  # extra_model_paths.yaml
        paths = cx.store.register_folder()
        assert paths == [str(tmp_path / "shared"), str(cx.lambda_dir)]
        assert cx.store.save_folder() == str(tmp_path / "shared") and (tmp_path / "shared").is_dir()
        assert cx.store.register_folder() == paths  # idempotent
    finally:
        fp.folder_names_and_paths["dode_lambdas"] = saved
