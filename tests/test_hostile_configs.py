"""Configs are data, never code: hostile pipeline YAMLs, recipes, device profiles and checkpoints, each run
through the real CLI (table harness: tests/hostile.py)."""

from __future__ import annotations

import pytest

from tests.hostile import Case, run_case


def _write(path, text: str):
    path.write_text(text)
    return path


def _pipeline(kernel: str, params: str) -> str:
    return (f"name: pwn\nstages:\n  - name: x\n    kernel: '{kernel}'\n    params: {params}\n"
            "    inputs: [frame]\n    outputs: [output]\n    units: [cpu0]\n")


def schedule(text: str):
    def setup(tmp, fx):
        _write(tmp / "pwn.yaml", text)
        return ["schedule", "pwn.yaml"]

    return setup


def distill(text: str, files: dict | None = None, resume: bool = False):
    def setup(tmp, fx):
        _write(tmp / "recipe.yaml", text)
        for name, make in (files or {}).items():
            make(tmp / name)
        return ["distill", "--config", "recipe.yaml"] + (["--resume"] if resume else [])

    return setup


def _crafted_checkpoint(path):
    """A checkpoint whose pickle creates PWNED (beside it) when unpickled by a full pickle load."""
    import os

    import torch

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch PWNED",))

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": 1, "student": Evil(), "opt": {}}, path)


def profile_with_library(tmp, fx):
    (tmp / "libevil.so").write_bytes(b"\x7fELF not really")
    _write(tmp / "evil.yaml", "id: evil\nhardware: gpu\nreach: local\ntargets: [tflite-fp32]\n"
           "delegates: {tflite: ['gpu=./libevil.so']}\nthreads: [1]\nresolutions: [[256, 256]]\nbudget: {fps: 30}\n")
    return ["profile", "--device", "evil.yaml", "--out", "out"]


def app_config_with_library(tmp, fx):
    import json
    import shutil
    from pathlib import Path

    configs = Path(__file__).resolve().parents[1] / "profiles" / "configs"
    shutil.copytree(configs / "local-cpu", tmp / "cfg" / "local-cpu")
    cfg = json.loads((configs / "local-cpu.json").read_text())
    cfg["runtime"]["delegate"] = "gpu=./libevil.so"
    (tmp / "cfg" / "local-cpu.json").write_text(json.dumps(cfg, indent=2))
    (tmp / "libevil.so").write_bytes(b"\x7fELF not really")
    return ["process", "in.mp4", "-o", "out.mp4", "-c", "cfg/local-cpu.json"]


DOTDOT = ("name: dd\nstages:\n  - name: segment\n    model: {source: ../student.onnx, shape: [1, 3, 64, 64], "
          "targets: {onnx: onnx-fp32}}\n    inputs: [frame]\n    outputs: [output]\n    units: [cpu0:onnx]\n")
RAISING = ("name: raising\nstages:\n  - name: prepare\n    kernel: model_input\n    params: {hw: oops}\n"
           "    inputs: [frame]\n    outputs: [output]\n    units: [cpu0, cpu1]\n")

CASES = [
    Case("schedule-kernel-popen", "code execution", "pipeline kernel subprocess:Popen with params (runs a command "
         "while the file is loaded)", schedule(_pipeline("subprocess:Popen", "{args: [touch, PWNED]}")), 2,
         "kernel 'subprocess:Popen' is not a registered kernel", survive=["pwn.yaml"], absent=["PWNED"], timeout=60),
    Case("schedule-kernel-os-system", "code execution", "pipeline kernel os:system with a command",
         schedule(_pipeline("os:system", "{command: touch PWNED}")), 2,
         "kernel 'os:system' is not a registered kernel", absent=["PWNED"], timeout=60),
    Case("schedule-no-name", "crash", "pipeline YAML without a name", schedule("stages: []\n"), 2,
         "'name' is a required property", timeout=60),
    Case("schedule-top-level-list", "crash", "pipeline YAML that is a top-level list", schedule("- a\n- b\n"), 2,
         "must be of type object, not a list", timeout=60),
    Case("schedule-yaml-syntax", "crash", "pipeline YAML with a syntax error", schedule("name: x\nstages: [\n"), 2,
         "is not valid YAML at line", timeout=60),
    Case("schedule-unknown-key", "crash", "pipeline YAML with a misspelt key", schedule("name: x\nstagez: []\n"), 2,
         "unknown key(s) 'stagez'", timeout=60),
    Case("schedule-dotdot-path", "escape", "pipeline model source with '..'", schedule(DOTDOT), 2,
         "leaves its folder", timeout=60),
    Case("schedule-stage-raises", "crash", "a stage raising a non-edgekit exception (bad kernel params)",
         schedule(RAISING), 7, "stage 'prepare' cannot run on any of its units here", timeout=120),
    Case("distill-steps-0", "crash", "recipe steps: 0 (trained a teacher for minutes, then crashed)",
         distill("steps: 0\noutput: out\n"), 2, "invalid at steps: 0 is less than the minimum of 1",
         absent=["out"], timeout=30),
    Case("distill-steps-ten", "crash", "recipe steps: ten", distill("steps: ten\noutput: out\n"), 2,
         "invalid at steps: must be of type integer, not a string", absent=["out"], timeout=30),
    Case("distill-kl-lots", "crash", "recipe losses.kl: lots", distill("losses: {kl: lots}\noutput: out\n"), 2,
         "invalid at losses/kl: must be of type number, not a string", absent=["out"], timeout=30),
    Case("distill-teacher-module", "code execution", "recipe teacher.module naming code (os:system)",
         distill("teacher: {kind: module, module: 'os:system'}\noutput: out\n"), 2,
         "is code to import; a recipe file cannot run code", absent=["out"], timeout=30),
    Case("distill-crafted-checkpoint", "code execution", "crafted checkpoint.pt for --resume (runs a command "
         "when unpickled)", distill("steps: 2\nbatch: 2\noutput: out\ndata: {size: 32, pool: 4}\n"
                                    "teacher: {width: 1.0, train_steps: 1}\n"
                                    "eval: {samples: 2, size: [32, 32], real_photos: false}\n",
                                    {"out/checkpoint.pt": _crafted_checkpoint}, resume=True), 2,
         "is not a plain weights file", survive=["out/checkpoint.pt"], absent=["PWNED", "out/PWNED"], timeout=120),
    Case("profile-delegate-library", "code execution", "device profile naming a delegate library (gpu=/x.so)",
         profile_with_library, 2, "names a library; a library is loaded only when given on the command line",
         survive=["libevil.so"], absent=["out"], timeout=60),
    Case("process-config-delegate-library", "code execution", "app config whose delegate names a library "
         "(gpu=./x.so)", app_config_with_library, 2, "names a library; a delegate library is loaded only when given "
         "on the command line", survive=["cfg/local-cpu.json"], absent=["out.mp4"], timeout=60),
]


# the cases that took longest when this file was timed alone with --durations=0 (the fast tier skips them)
SLOW = {"distill-crafted-checkpoint", "schedule-stage-raises", "schedule-top-level-list"}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c.id in SLOW else c for c in CASES],
                         ids=lambda c: c.id)
def test_hostile(case, tmp_path, request):
    if case.id == "distill-crafted-checkpoint":
        pytest.importorskip("torch")
    run_case(case, tmp_path, request)
