"""``edgekit distill``: train a student from a teacher with pixelwise KL, pairwise affinity and
attention transfer (plus the ground truth), offline or online, on one or several processes.

    edgekit distill --config recipe.yaml [--resume] [--nproc 2]

Several processes run through ``torch.distributed.run`` with the gloo backend (CPU); rank 0 shows
progress, evaluates, checkpoints (atomically, resumable) and exports the student to ONNX.

Everything saved is plain data: state dicts (tensors) and metadata of numbers, strings, lists and dicts.
Every weights file is loaded with ``torch.load(weights_only=True)``, so a crafted ``checkpoint.pt`` (or a
teacher checkpoint, or ``student.init``) cannot run code: it is refused with one line.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgekit.apps.train.recipe import OUTPUT_ONLY, Recipe, load_recipe
from edgekit.core.deps import require
from edgekit.core.files import atomic_path
from edgekit.errors import EdgekitError, InputError

HELD_OUT_SEED = 987654  # the held-out synthetic set (never used for training)


def _dist():
    import torch.distributed as dist

    return dist


def world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def build_data(recipe: Recipe, rank: int, labeler=None):
    """The weighted training sources; ``labeler`` (the output-only teacher's soft masks) labels
    ``data.unlabeled``."""
    from edgekit.apps.train.datasets import Mixture, PortraitFolder, SyntheticSource, UnlabeledSource

    sources, weights = [], []
    if recipe.data.synthetic > 0:
        sources.append(SyntheticSource(recipe.data.size, recipe.data.pool, seed=recipe.seed + 1000))
        weights.append(recipe.data.synthetic)
    for f in recipe.data.folders:
        sources.append(PortraitFolder(f["path"], float(f.get("recompose", 0.0))))
        weights.append(float(f.get("weight", 1.0)))
    for u in recipe.data.unlabeled:
        if labeler is None:
            raise InputError("recipe: data.unlabeled needs a teacher that labels it (teacher.kind model|artifact)")
        sources.append(UnlabeledSource(u["path"], labeler, int(u.get("every", 5))))
        weights.append(float(u.get("weight", 1.0)))
    if not sources:
        raise InputError("recipe: no training data (synthetic weight is 0 and no folders)")
    return Mixture(sources, weights)


class Teacher:
    """Logits (and stage features for PyTorch teachers) of a batch."""

    def __init__(self, recipe: Recipe, out_dir: Path, data, progress):
        require("torch")
        self.recipe, self.session, self.module, self.net = recipe, None, None, None
        cfg = recipe.teacher
        if cfg.kind == "artifact":
            from edgekit.api import load

            self.session = load(cfg.artifact)
            return
        if cfg.kind == "model":
            self.session = _reference_session(cfg.model)
            return
        if cfg.kind == "module":
            from edgekit.core.ingest import _load_torch_reference

            self.module = _load_torch_reference(cfg.module)
        else:
            from edgekit.zoo.portrait_seg import build

            self.module = build(width=cfg.width)
        self.net = self.module  # the bare network (checkpoints, evaluation)
        ckpt = Path(cfg.checkpoint) if cfg.checkpoint else out_dir / "teacher.pt"
        if ckpt.is_file():
            _load_state(self.net, load_weights(ckpt, "teacher checkpoint"), f"teacher checkpoint {ckpt}")
        elif recipe.mode == "offline":
            if cfg.kind != "builtin":
                raise InputError(f"teacher checkpoint {ckpt} not found")
            self._pretrain(data, ckpt, progress)
        self.net.train(recipe.mode == "online")
        from edgekit.zoo.portrait_seg import WithFeatures

        self.module = _maybe_ddp(WithFeatures(self.net)) if recipe.mode == "online" else WithFeatures(self.net)

    def _pretrain(self, data, ckpt: Path, progress) -> None:
        """Train the builtin teacher on the ground truth before distilling (offline mode)."""
        torch = require("torch")
        from edgekit.apps.train.losses import ground_truth
        from edgekit.apps.train.segmentation import to_tensor

        rank, size = world()
        rng = np.random.default_rng(self.recipe.seed + 7 + rank)
        from edgekit.zoo.portrait_seg import WithFeatures

        model = _maybe_ddp(WithFeatures(self.net))
        cfg = self.recipe.teacher
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
        steps = cfg.train_steps
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(steps, 1),
                                                    pct_start=0.1)
        model.train()
        for step in range(steps):
            imgs, masks = data.batch(rng, self.recipe.batch, self.recipe.data.size)
            loss = ground_truth(model(to_tensor(imgs))[0], torch.from_numpy(masks)[:, None])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            progress("teacher", step + 1, steps, float(loss.detach()))
        self.net.eval()
        if rank == 0:
            _save_atomic(self.net.state_dict(), ckpt)

    def label(self, imgs: np.ndarray) -> np.ndarray:
        """An output-only teacher's soft masks of N x H x W x 3 RGB [0, 1] images: each image goes in the way the
        teacher's own input spec says (its size, layout, colour order and normalization) and its mask comes back
        at the image's size, as probabilities."""
        from edgekit.apps.profiling.latency import CameraFrame

        cam = CameraFrame(self.session, imgs.shape[1:3])
        out = []
        for img in imgs:
            bgr = np.ascontiguousarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)[..., ::-1])
            y = cam.mask_of(bgr)
            out.append(1 / (1 + np.exp(-y)) if cam.out.kind == "logits" else y)
        return np.stack(out).astype(np.float32)

    def __call__(self, x, imgs: np.ndarray | None = None):
        torch = require("torch")
        if self.session is not None:  # output-only teacher: its soft masks of the raw images -> logits
            p = torch.from_numpy(np.clip(self.label(imgs), 1e-4, 1 - 1e-4))[:, None]
            return torch.log(p / (1 - p)), None
        return self.module(x)


def _reference_session(name: str):
    """A catalogue model (``edgekit models list``) run as it is, in its own framework (LiteRT for a ``.tflite``,
    ONNX Runtime for ONNX). A recipe names models, never files.

    Raises:
        InputError: an unknown or unfetched model.
    """
    from edgekit.core.ingest import original_session
    from edgekit.zoo.mediapipe import resolve

    return original_session(resolve(name, allow_path=False))


def _maybe_ddp(module):
    """DistributedDataParallel (gloo) when running as one rank of several, else the module itself."""
    if world()[1] == 1:
        return module
    torch = require("torch")
    return torch.nn.parallel.DistributedDataParallel(module)


def plain(value):
    """``value`` as JSON-able Python data (numpy scalars become numbers, tuples lists): what
    ``torch.load(weights_only=True)`` accepts besides tensors."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def load_weights(path: str | Path, what: str):
    """A state dict or checkpoint saved by edgekit, loaded with ``weights_only=True`` (no code can run).

    Raises:
        InputError: the file is missing or holds anything but tensors and plain data.
    """
    torch = require("torch")
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} {p} not found")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError...: all mean "not plain weights"
        first = " ".join(str(e).split())[:200]
        raise InputError(f"{what} {p} is not a plain weights file (state dicts and plain data only; "
                         f"anything else is refused so that it cannot run code): {type(e).__name__}: {first}") from e


def _read_checkpoint(path: Path, recipe: Recipe) -> dict:
    """A distill checkpoint, loaded as plain data and checked for the keys a resume needs.

    Raises:
        InputError: not plain data, or not a checkpoint of this kind of run.
    """
    ckpt = load_weights(path, "checkpoint")
    what = f"checkpoint {path}"
    if not isinstance(ckpt, dict) or not {"step", "student", "opt"} <= set(ckpt) or not isinstance(
            ckpt["step"], int) or ckpt["step"] < 0 or not isinstance(ckpt.get("history", []), list):
        raise InputError(f"{what} is not an edgekit distill checkpoint (expected step, student, opt)")
    if recipe.mode == "online" and "teacher" not in ckpt:
        raise InputError(f"{what} holds no teacher state (was it written by an offline run?)")
    return ckpt


def _load_state(module, state, what: str) -> None:
    if not isinstance(state, dict):
        raise InputError(f"{what} does not hold a state dict")
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        first = " ".join(str(e).split())[:200]
        raise InputError(f"{what} does not fit this model: {first}") from e


def _save_atomic(obj, path: Path) -> None:
    torch = require("torch")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def distill(recipe: Recipe | str | Path, resume: bool = False,
            progress: Callable[[str, int, int, float], None] | None = None) -> dict:
    """Run a recipe in this process (one rank of a distributed run when ``WORLD_SIZE`` is set)."""
    torch = require("torch")
    from edgekit.apps.train.losses import attention_transfer, ground_truth, pairwise_affinity, pixelwise_kl
    from edgekit.apps.train.segmentation import to_tensor
    from edgekit.zoo.portrait_seg import build

    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    rank, size = world()
    if size > 1 and not _dist().is_initialized():
        _dist().init_process_group("gloo")
    torch.manual_seed(recipe.seed)
    say = progress if (progress and rank == 0) else (lambda *a: None)
    out = Path(recipe.output)
    ckpt_path = out / "checkpoint.pt"
    ckpt = _read_checkpoint(ckpt_path, recipe) if resume and ckpt_path.is_file() else None  # before any work
    if recipe.teacher.kind in OUTPUT_ONLY:  # a frozen model: it needs no data, and it labels data.unlabeled
        teacher = Teacher(recipe, out, None, say)
        data = build_data(recipe, rank, teacher.label)
    else:
        data = build_data(recipe, rank)
        teacher = Teacher(recipe, out, data, say)
    student = build(width=recipe.student.width)
    if recipe.student.init:
        _load_state(student, load_weights(recipe.student.init, "student.init"), f"student.init {recipe.student.init}")
    from edgekit.zoo.portrait_seg import WithFeatures

    trainable = _maybe_ddp(WithFeatures(student))
    params = list(student.parameters()) + (list(teacher.net.parameters()) if recipe.mode == "online" else [])
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=recipe.steps, pct_start=0.1)
    start, history = 0, []
    if ckpt is not None:
        what = f"checkpoint {ckpt_path}"
        _load_state(student, ckpt["student"], what)
        if recipe.mode == "online":
            _load_state(teacher.net, ckpt["teacher"], what)
        try:
            opt.load_state_dict(ckpt["opt"])
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise InputError(f"{what}: its optimizer state does not fit this recipe: {e}") from e
        start, history = ckpt["step"], list(ckpt.get("history", []))
        for _ in range(min(start, recipe.steps)):  # the schedule spans this recipe's steps (it may be longer)
            sched.step()
    rng = np.random.default_rng(recipe.seed + 31 * rank + 7919 * start)
    w = recipe.losses
    student.train()
    for step in range(start, recipe.steps):
        imgs, masks = data.batch(rng, recipe.batch, recipe.data.size)
        x, m = to_tensor(imgs), torch.from_numpy(masks)[:, None]
        s_logits, s_feats = trainable(x)
        loss = w.gt * ground_truth(s_logits, m)
        if w.kl or w.affinity or w.attention or recipe.mode == "online":
            with torch.set_grad_enabled(recipe.mode == "online"):
                t_logits, t_feats = teacher(x, imgs)
            if recipe.mode == "online":
                loss = loss + ground_truth(t_logits, m)
                t_logits, t_feats = t_logits.detach(), [f.detach() for f in t_feats]
            if w.kl:
                loss = loss + w.kl * pixelwise_kl(s_logits, t_logits, w.temperature)
            if w.affinity:
                loss = loss + w.affinity * sum(pairwise_affinity(s, t, w.affinity_pool)
                                               for s, t in zip(s_feats[2:], t_feats[2:]))
            if w.attention:
                loss = loss + w.attention * sum(attention_transfer(s, t) for s, t in zip(s_feats, t_feats))
        opt.zero_grad()
        loss.backward()  # DDP averages the gradients across ranks here
        opt.step()
        sched.step()
        say("student", step + 1, recipe.steps, float(loss.detach()))
        done = step + 1
        if rank == 0 and recipe.eval.every and done % recipe.eval.every == 0 and done < recipe.steps:
            history.append({"step": done, **evaluate_model(student, recipe)})
            student.train()
        if rank == 0 and (done % recipe.checkpoint_every == 0 or done == recipe.steps):
            state = {"step": done, "student": student.state_dict(), "opt": opt.state_dict(),
                     "history": plain(history), "recipe": plain(recipe.to_dict())}
            if recipe.mode == "online":
                state["teacher"] = teacher.net.state_dict()
            _save_atomic(state, ckpt_path)
    student.eval()
    result = {}
    if rank == 0:
        result = {"student": evaluate_model(student, recipe), "history": history, "steps": recipe.steps,
                  "world_size": size}
        if teacher.net is not None:
            result["teacher"] = evaluate_model(teacher.net, recipe)
        export(student, out)
        (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    if size > 1:
        _dist().barrier()
    return result


def evaluate_model(model, recipe: Recipe) -> dict:
    """Mask IoU and boundary F-score on the held-out synthetic set, and (when the photos and MediaPipe
    are fetched) mask IoU on real photos against MediaPipe's selfie segmenter."""
    from edgekit.apps.train.segmentation import evaluate, torch_predictor
    from edgekit.core.samples.synthetic import dataset

    h, w = recipe.eval.size
    imgs, masks = dataset(recipe.eval.samples, h, w, seed=HELD_OUT_SEED)
    model.eval()
    predict = torch_predictor(model)
    result = evaluate(predict, imgs, masks)
    if recipe.eval.real_photos:
        from edgekit.apps.train.real_eval import real_photo_iou

        result["real"] = real_photo_iou(predict, _real_refs((h, w)))
    return result


_REFS: dict = {}


def _real_refs(size):
    if size not in _REFS:
        from edgekit.apps.train.real_eval import reference_masks
        from edgekit.errors import EdgekitError

        try:
            _REFS[size] = reference_masks(size)
        except EdgekitError:  # MediaPipe not fetched: reported as no photos, never as a number
            _REFS[size] = []
    return _REFS[size]


def export(student, out: Path) -> Path:
    from edgekit.core.ingest import export_torch

    path = out / "student.onnx"
    with atomic_path(path, suffix=".onnx") as tmp:
        export_torch(student, tmp, (1, 3, 256, 256), input_name="image", output_names=["mask"], dynamic_hw=True)
    _save_atomic(student.state_dict(), out / "student.pt")
    return path


def distill_distributed(recipe: Recipe, config: str | Path, nproc: int, resume: bool,
                        teacher_module: str | None = None) -> dict:
    """:func:`distill` on ``nproc`` CPU processes (:func:`launch`); returns the metrics rank 0 wrote.

    Raises:
        EdgekitError: the distributed run failed.
    """
    if launch(config, nproc, resume, teacher_module) != 0:
        raise EdgekitError(f"distributed training on {nproc} processes failed (see the log above)")
    return json.loads((Path(recipe.output) / "metrics.json").read_text())


def launch(config: str | Path, nproc: int, resume: bool, teacher_module: str | None = None) -> int:
    """Run a recipe on ``nproc`` CPU processes (gloo) through torch.distributed.run; returns its exit status.

    The workers run in their own process group, which Ctrl-C or SIGTERM of edgekit takes down with it.
    """
    from edgekit.core import subprocesses

    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
           "-m", "edgekit.apps.train.distill", str(config)] + (["--resume"] if resume else []) + (
        ["--teacher-module", teacher_module] if teacher_module else [])
    return subprocesses.run(cmd, "torch.distributed.run", env={**os.environ, "OMP_NUM_THREADS": "1"},
                            timeout=float("inf"), error=EdgekitError, capture=False).returncode


if __name__ == "__main__":  # one rank of a torch.distributed.run launch
    args = sys.argv[1:]
    module = args[args.index("--teacher-module") + 1] if "--teacher-module" in args else None
    print(json.dumps(distill(load_recipe(args[0], teacher_module=module), resume="--resume" in args)))
