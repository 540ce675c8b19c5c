"""Weights in a model's authors' release format: a model class's ``read_release_weights`` is asked first, by
``--weights`` (load_inference_weights) and ``train.init_checkpoint`` (load_init_weights) alike; a file or folder
in no known format is one paragraph naming what it holds."""

from __future__ import annotations

import os
from typing import Optional

import pytest
import torch
from torch import nn

from lazytrain.checkpoint import atomic_save, load_inference_weights, load_init_weights
from lazytrain.errors import ConfigError


class TwoPartNet(nn.Module):
    """A model whose "authors" release it as a folder of two state dicts, ``enc`` and ``dec``."""

    def __init__(self, hidden: int = 4) -> None:
        super().__init__()
        self.encoder = nn.Linear(3, hidden)
        self.decoder = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    @classmethod
    def read_release_weights(cls, path: str) -> Optional[dict[str, torch.Tensor]]:
        """The authors' folder with the state dicts 'enc' and 'dec'."""
        if not (os.path.isdir(path) and os.path.isfile(os.path.join(path, "enc"))):
            return None
        parts = {name: torch.load(os.path.join(path, short), weights_only=True)
                 for name, short in (("encoder", "enc"), ("decoder", "dec"))}  # fmt: skip
        return {f"{name}.{key}": value for name, part in parts.items() for key, value in part.items()}


def write_release(folder, hidden: int = 4, seed: int = 0) -> TwoPartNet:
    torch.manual_seed(seed)
    authors = TwoPartNet(hidden)
    os.makedirs(folder, exist_ok=True)
    torch.save(authors.encoder.state_dict(), os.path.join(folder, "enc"))
    torch.save(authors.decoder.state_dict(), os.path.join(folder, "dec"))
    return authors


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_weights_of_an_authors_release_folder_load_through_the_model_classes_reader(tmp_path):
    authors = write_release(tmp_path / "release")
    model = TwoPartNet()
    assert not same_weights(model, authors)
    extra = load_inference_weights(model, str(tmp_path / "release"))
    assert same_weights(model, authors)
    assert extra["weights"] == "model" and extra["release"] == "TwoPartNet.read_release_weights"


def test_the_reader_is_found_inside_the_ema_and_compile_wrappers(tmp_path):
    authors = write_release(tmp_path / "release")
    ema = torch.optim.swa_utils.AveragedModel(TwoPartNet())  # holds a copy of the model in .module
    compiled = torch.compile(TwoPartNet())
    for wrapped, inner in ((ema, ema.module), (compiled, compiled._orig_mod)):
        load_inference_weights(wrapped, str(tmp_path / "release"))
        assert same_weights(inner, authors)


def test_init_checkpoint_fine_tunes_from_an_authors_release(tmp_path):
    authors = write_release(tmp_path / "release")
    model = TwoPartNet()
    report = load_init_weights(model, str(tmp_path / "release"), strict=True)
    assert same_weights(model, authors) and len(report["loaded"]) == 4


def test_our_own_checkpoint_still_loads_for_a_model_with_a_reader(tmp_path):
    torch.manual_seed(1)
    trained = TwoPartNet()
    atomic_save({"model": trained.state_dict(), "iteration": 9}, str(tmp_path / "model_final.pth"))
    model = TwoPartNet()
    extra = load_inference_weights(model, str(tmp_path / "model_final.pth"))
    assert same_weights(model, trained) and extra["iteration"] == 9 and "release" not in extra


def test_a_release_of_another_variant_names_the_weights_that_do_not_fit(tmp_path):
    write_release(tmp_path / "release", hidden=8)
    with pytest.raises(ConfigError) as e:
        load_inference_weights(TwoPartNet(hidden=4), str(tmp_path / "release"))
    message = str(e.value)
    assert "the authors' release" in message and "does not fit the model TwoPartNet" in message
    assert "encoder.weight: (8, 3) in the release, (4, 3) in the model" in message


def test_a_file_in_no_known_format_names_its_top_level_keys_and_the_formats_accepted(tmp_path):
    path = str(tmp_path / "other.pth")
    torch.save({"state_dict": TwoPartNet().state_dict(), "epoch": 3}, path)
    for load in (load_inference_weights, load_init_weights):
        with pytest.raises(ConfigError) as e:
            load(TwoPartNet(), path)
        message = str(e.value)
        assert "'state_dict', 'epoch'" in message, message
        assert "a lazytrain checkpoint (a dict with 'model'" in message
        assert "TwoPartNet.read_release_weights reads: The authors' folder with the state dicts 'enc' and 'dec'" in (
            message
        )
        assert "\n" not in message
    assert "train.init_checkpoint" in message  # load_init_weights names its key


def test_a_folder_in_no_known_format_names_its_files(tmp_path):
    folder = tmp_path / "downloaded"
    folder.mkdir()
    for name in ("arch.yaml", "weights.bin"):
        (folder / name).write_text("x")
    with pytest.raises(ConfigError, match=r"it is a folder holding arch\.yaml, weights\.bin\. Accepted: "):
        load_inference_weights(nn.Linear(2, 2), str(folder))
    with pytest.raises(ConfigError, match=r"checkpoint '.*nowhere' does not exist"):
        load_inference_weights(nn.Linear(2, 2), str(tmp_path / "nowhere"))
