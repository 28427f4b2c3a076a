"""thelper annot without a display, config errors, and the plugin's registration."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.gui.xdo import THELPER
from thelper_gui.display import display_problem


def run(args, cwd, env_drop=(), **env):
    full = {k: v for k, v in os.environ.items() if k not in env_drop}
    full.update(COLUMNS="250", **env)
    return subprocess.run([str(THELPER), *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=300, check=False)


def test_display_problem_reads_the_environment(tmp_path):
    assert display_problem({}) == "DISPLAY is not set"
    assert "not of the form" in display_problem({"DISPLAY": "nonsense"})
    assert display_problem({"DISPLAY": ":4711"}).startswith("no X server answers")
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}) is None


def test_no_display_is_a_one_line_error(seg_config, tmp_path):
    result = run(["annot", str(seg_config()), "--save-dir", str(tmp_path / "a")], tmp_path,
                 env_drop=("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: thelper annot opens a window but DISPLAY is not set; run it in "
                      "a desktop session, over 'ssh -X', or under a virtual display "
                      "('xvfb-run -a thelper ...')"]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "a").exists()


def test_config_without_annotator_section(seg_config, tmp_path):
    import yaml

    path = seg_config()
    cfg = yaml.safe_load(path.read_text())
    del cfg["annotator"]
    path.write_text(yaml.safe_dump(cfg))
    result = run(["annot", str(path)], tmp_path)
    assert result.returncode == 2
    assert "no 'annotator' section" in result.stderr and "Traceback" not in result.stderr


def test_annotator_section_is_validated(seg_config, tmp_path):
    import yaml

    path = seg_config({"default_brush_radus": 3})
    cfg = yaml.safe_load(path.read_text())
    cfg["annotator"]["params"]["labels"].append({"id": 1, "name": "again"})
    path.write_text(yaml.safe_dump(cfg))
    result = run(["config", "validate", str(path)], tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    text = result.stdout + result.stderr
    assert "annotator.params.default_brush_radus: unknown key 'default_brush_radus'; did " \
           "you mean 'default_brush_radius'?" in text
    del cfg["annotator"]["params"]["default_brush_radus"]
    path.write_text(yaml.safe_dump(cfg))
    result = run(["config", "validate", str(path)], tmp_path)
    assert result.returncode == 2
    assert "label ids must be unique (repeated: [1])" in result.stdout + result.stderr
    cfg["annotator"] = {"type": "thelper.gui.ImageSegmentAnnotator", "params": {
        "sample_input_key": "input",
        "labels": [{"id": 255, "name": "foreground", "color": [0, 0, 255]}]}}  # 0.6 form
    path.write_text(yaml.safe_dump(cfg))
    result = run(["config", "validate", str(path)], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_plugin_module_imports_nothing_heavy():
    code = ("import sys\nimport thelper_gui.plugin as p\ninfos = p.thelper_register_"
            "components()\nheavy = sorted(m for m in ('torch', 'numpy', 'cv2', 'pydantic') "
            "if m in sys.modules)\nprint(len(infos), heavy)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(maxsplit=1) == ["7", "[]\n"]
