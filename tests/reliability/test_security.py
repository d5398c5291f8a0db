"""Nothing a user receives from someone else is executed: checkpoints load with ``weights_only=True``, boosters
in their engines' own formats, YAML with the safe loader; archive extraction refuses path traversal and links.
Each payload below would create a marker file if it ran."""

from __future__ import annotations

import ast
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch

from chaos import ENV, gzpipe

PACKAGE = Path(__file__).resolve().parents[2] / "gzpipe"


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            yield owner, name, node


def test_source_uses_only_safe_loaders():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n and n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "shelve", "marshal") for n in names):
                    problems.append(f"{path.name}:{node.lineno} imports a pickle-family module")
        for owner, name, node in _calls(tree):
            kw = {k.arg: k.value for k in node.keywords}
            where = f"{path.name}:{node.lineno}"
            if owner == "torch" and name == "load":
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                ok or problems.append(f"{where} torch.load without weights_only=True")
            if owner == "yaml" and name in ("load", "load_all", "unsafe_load", "full_load"):
                problems.append(f"{where} yaml.{name} (use yaml.safe_load)")
            if name in ("eval", "exec") and isinstance(node.func, ast.Name):  # the builtins, not model.eval()
                problems.append(f"{where} {name}()")
            if name == "load" and owner in ("np", "numpy") and isinstance(kw.get("allow_pickle"), ast.Constant) \
                    and kw["allow_pickle"].value:
                problems.append(f"{where} np.load(allow_pickle=True)")
            if name in ("extractall", "extract") and owner not in ("",):
                problems.append(f"{where} archive .{name}() (extract member by member with path checks)")
    assert not problems, problems


class _Payload:
    """Unpickling this runs `touch MARKER`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


def _evil_checkpoint(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": _Payload(marker), "config": {"backbone": "resnet50"}}, path)


def test_a_malicious_checkpoint_is_refused_everywhere(tmp_path, train_shards):
    marker = tmp_path / "owned"
    run = tmp_path / "art" / "resnet50"
    _evil_checkpoint(run / "checkpoints" / "best_model.pth", marker)
    _evil_checkpoint(run / "checkpoints" / "latest_checkpoint.pth", marker)
    (run / "training_complete.txt").write_text("done\n")
    for args in (["features", "--backbone", "resnet50", "--out", tmp_path / "art", "--device", "cpu"],
                 ["predict", train_shards / "val-000000.tar", "--model", run, "--out", tmp_path / "p.csv"],
                 ["train", "--backbone", "resnet50", "--shards", train_shards, "--out", tmp_path / "art", "--epochs", "1",
                  "--image-size", "32", "--batch-size", "4", "--device", "cpu", "--skip"]):
        r = subprocess.run(gzpipe(*args), capture_output=True, text=True, env=ENV, timeout=300)
        assert r.returncode != 0, (args[0], r.stdout[-500:])
        assert not marker.exists(), f"{args[0]} executed code from a checkpoint"
        assert "weights_only" in r.stderr or "Weights only load failed" in r.stderr or "unreadable" in r.stderr \
            or "cannot load" in r.stderr, r.stderr[-1500:]
    # resuming: the unreadable latest checkpoint is skipped with a warning, never executed
    from gzpipe.train import checkpoint as ckpt

    with pytest.warns(UserWarning, match="unreadable"):
        assert ckpt.load_latest(run / "checkpoints") is None
    assert not marker.exists()


def test_yaml_configs_are_data(tmp_path):
    marker = tmp_path / "owned"
    cfg = tmp_path / "study.yaml"
    cfg.write_text(f'preset: demo\nout: !!python/object/apply:subprocess.call [["touch", "{marker}"]]\n')
    r = subprocess.run(gzpipe("study", "--config", cfg), capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 2 and "not valid YAML" in r.stderr and not marker.exists(), r.stderr


def test_archive_extraction_refuses_traversal_absolute_paths_and_links(tmp_path):
    from gzpipe.download import unpack_images

    outside = tmp_path / "outside.jpg"
    z = tmp_path / "images.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("images/1.jpg", b"\xff\xd8\xff ok")
        f.writestr("../outside.jpg", b"\xff\xd8\xff evil")
        f.writestr("/tmp/absolute.jpg", b"\xff\xd8\xff evil")
        f.writestr("C:\\windows.jpg", b"\xff\xd8\xff evil")
        link = zipfile.ZipInfo("images/2.jpg")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        f.writestr(link, str(outside))
    out = tmp_path / "images"
    (out).mkdir()
    (out / "3.jpg").symlink_to(outside)  # a link planted at a name the archive also holds
    with zipfile.ZipFile(z, "a") as f:
        f.writestr("images/3.jpg", b"\xff\xd8\xff replaces the link")
    rep = unpack_images(z, out)
    assert rep["refused_unsafe_path"] == 3 and rep["refused_symlink"] == 1 and rep["extracted"] == 2
    assert not outside.exists() and not Path("/tmp/absolute.jpg").exists()
    assert not (out / "2.jpg").exists()
    assert not (out / "3.jpg").is_symlink() and (out / "3.jpg").read_bytes().endswith(b"replaces the link")
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["1.jpg", "3.jpg"]
