"""`lazytrain config` and `lazytrain hooks` take about the time of loading the config: nothing on their path
imports torch._dynamo (1-2 s on 2 cores); the methods torch.compile must skip are switched off only when it
compiles."""

from __future__ import annotations

import subprocess
import sys

import torch
from conftest import REPO, cli_env

from lazytrain.compile_off import disable_marked_methods, not_compiled


def test_config_and_hooks_of_the_flagship_do_not_import_torch_dynamo():
    code = (
        "import sys\nfrom lazytrain.cli import main\n"
        f"main(['hooks', {str(REPO / 'configs' / 'kitti_seg.py')!r}])\n"
        f"main(['config', {str(REPO / 'configs' / 'kitti_seg.py')!r}])\n"
        "print('dynamo' if 'torch._dynamo' in sys.modules else 'no dynamo', file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "settings (no hooks, but they change training):" in r.stdout
    assert r.stderr.strip().splitlines()[-1] == "no dynamo"


class ReadsOnFirstCall(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    @not_compiled
    def note(self) -> None:
        self.seen.append(torch.compiler.is_compiling())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.note()
        return x * 2


def test_a_marked_method_runs_outside_the_compiled_graph():
    model = ReadsOnFirstCall()
    disable_marked_methods(model)
    out = torch.compile(model, backend="eager")(torch.ones(3))
    assert out.tolist() == [2.0, 2.0, 2.0] and model.seen == [False]


def test_config_of_a_config_that_imports_nothing_heavy_does_not_import_torch(tmp_path):
    (tmp_path / "light.py").write_text("model = dict(hidden=3)\ntrain = dict(max_iter=3)\n")
    code = (
        "import sys\nfrom lazytrain.cli import main\n"
        f"main(['config', {str(tmp_path / 'light.py')!r}])\n"
        "print('torch' if 'torch' in sys.modules else 'no torch', file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert "max_iter: 3" in r.stdout and r.stderr.strip().splitlines()[-1] == "no torch"
