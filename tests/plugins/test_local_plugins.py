"""Local plugin modules: ``thelper -p my_models run ...`` without packaging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml

MODULE = '''
"""A research model in a plain file, registered as a thelper plugin."""
import torch

from thelper.hookspecs import hookimpl
from thelper.params import Params
from thelper.registry import ComponentInfo


class TinyNetParams(Params):
    in_features: int = 64
    num_classes: int = 10
    hidden: int = 32


class TinyNet(torch.nn.Module):
    def __init__(self, in_features: int = 64, num_classes: int = 10, hidden: int = 32):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(in_features, hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net(x.flatten(1))


@hookimpl
def thelper_register_components():
    return [ComponentInfo("model", "tiny_net", "my_models:TinyNet", "my_models:TinyNetParams",
                          description="a two-layer MLP from my_models.py")]
'''


def _thelper(args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "thelper", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def project(tmp_path, mlp_config):
    (tmp_path / "my_models.py").write_text(textwrap.dedent(MODULE))
    mlp_config["model"] = {"type": "tiny_net", "params": {"hidden": 16}}
    mlp_config["trainer"]["epochs"] = 1
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(mlp_config))
    return tmp_path


@pytest.mark.slow
def test_local_module_lists_validates_trains_and_resume_asks_for_it(project):
    listed = _thelper(["-p", "my_models", "plugins", "list", "--json"], project)
    assert listed.returncode == 0, listed.stderr
    plugins = {p["plugin"]: p for p in json.loads(listed.stdout)["plugins"]}
    assert plugins["my_models"]["components"] == {"model": ["tiny_net"]}
    assert plugins["my_models"]["distribution"] is None

    # without -p the type is unknown: nothing is imported from the directory by itself
    bad = _thelper(["config", "validate", "cfg.yaml"], project)
    assert bad.returncode == 2 and "tiny_net" in bad.stderr
    ok = _thelper(["-p", "my_models", "config", "validate", "cfg.yaml", "--build"], project)
    assert ok.returncode == 0, ok.stderr
    schema = _thelper(["-p", "my_models", "config", "schema"], project)
    assert "tiny_net" in schema.stdout

    run = _thelper(["-p", "my_models", "run", "cfg.yaml", "-o", "s"], project)
    assert run.returncode == 0, run.stderr
    session = project / "s" / "digits-mlp"
    record = json.loads((session / "logs" / "plugins.json").read_text())
    assert record["local_modules"] == ["my_models"]

    more = ["--set", "trainer.epochs=2"]
    refused = _thelper(["resume", str(session), *more], project)
    assert refused.returncode == 2
    assert "thelper -p my_models resume" in refused.stderr
    assert "Traceback" not in refused.stderr
    resumed = _thelper(["-p", "my_models", "resume", str(session), *more], project)
    assert resumed.returncode == 0, resumed.stderr


def test_local_module_found_on_pythonpath_and_errors(project, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    on_path = _thelper(["-p", "my_models", "plugins", "list"], elsewhere,
                       env={"PYTHONPATH": str(project)})
    assert on_path.returncode == 0 and "tiny_net" in on_path.stdout

    missing = _thelper(["-p", "no_such_module", "plugins", "list"], elsewhere)
    assert missing.returncode == 2
    assert "cannot import local plugin module 'no_such_module'" in missing.stderr
    assert "PYTHONPATH" in missing.stderr and "Traceback" not in missing.stderr

    (elsewhere / "nohooks.py").write_text("X = 1\n")
    nohooks = _thelper(["-p", "nohooks", "plugins", "list"], elsewhere)
    assert nohooks.returncode == 2 and "implements no thelper hook" in nohooks.stderr
    bad_name = _thelper(["-p", "my-models.py", "plugins", "list"], elsewhere)
    assert bad_name.returncode == 2 and "not a module name" in bad_name.stderr


@pytest.mark.slow
def test_grid_workers_load_the_local_module(project):
    (project / "grid.yaml").write_text(yaml.safe_dump({
        "name": "g", "base": "cfg.yaml", "seed": 1, "max_concurrent": 1,
        "vary": {"model.params.hidden": [8, 16]}}))
    res = _thelper(["-p", "my_models", "grid", "run", "grid.yaml", "-o", "grids"], project)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in (project / "grids" / "g").glob("*/run.json")]
    assert len(runs) == 2 and {r["status"] for r in runs} == {"completed"}


@pytest.mark.slow
def test_grid_survives_a_worker_killed_mid_experiment(project):
    """A worker process that dies (SIGKILL in the middle of an experiment's first training
    batch: an OOM kill, a segfault) fails that experiment only; a new worker runs the
    others, and the grid ends (it used to wait forever on the dead worker's closed pipe)."""
    code = (project / "my_models.py").read_text().replace(
        "        return self.net(x.flatten(1))",
        "        if self.net[0].out_features == 16:\n"
        "            import os, signal\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "        return self.net(x.flatten(1))")
    (project / "my_models.py").write_text(code)
    (project / "grid.yaml").write_text(yaml.safe_dump({
        "name": "g", "base": "cfg.yaml", "seed": 1, "max_concurrent": 1,
        "vary": {"model.params.hidden": [8, 16, 24]}}))
    res = _thelper(["-p", "my_models", "grid", "run", "grid.yaml", "-o", "grids"], project)
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    runs = {json.loads(p.read_text())["hparams"]["model.params.hidden"]: json.loads(
        p.read_text()) for p in (project / "grids" / "g").glob("*/run.json")}
    assert {h: r["status"] for h, r in runs.items()} == {
        8: "completed", 16: "failed", 24: "completed"}
    assert "worker process died (killed by signal 9)" in runs[16]["error"]
    assert "Traceback" not in res.stderr


def test_grid_ends_when_its_workers_die_while_starting(project):
    """Workers that die before they are ready (here: the local module exits the process
    when imported in a worker) fail their experiments and the grid ends with exit code 1;
    the grid process used to spin forever on the dead worker's closed pipe, even through
    SIGTERM."""
    (project / "crashmod.py").write_text(textwrap.dedent('''
        import multiprocessing, os
        from thelper.hookspecs import hookimpl
        if multiprocessing.parent_process() is not None:
            os._exit(3)  # in a grid worker only

        @hookimpl
        def thelper_register_components():
            return []
        '''))
    (project / "grid.yaml").write_text(yaml.safe_dump({
        "name": "g", "base": "cfg.yaml", "seed": 1, "max_concurrent": 1,
        "vary": {"trainer.optimization.optimizer.params.lr": [0.1, 0.01]}}))
    res = _thelper(["-p", "my_models", "-p", "crashmod", "grid", "run", "grid.yaml",
                    "-o", "grids"], project)
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.count("failed: worker process died (exit code 3)") == 2, res.stdout
    assert "Traceback" not in res.stderr
