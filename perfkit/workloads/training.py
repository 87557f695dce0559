"""Training runs: a network trained with SGD on a data set for some epochs, its training error followed as it goes.

`train()` runs minibatch SGD over a data set held on the device (shuffled each epoch with a seeded generator, the last
incomplete batch dropped) and stops at a number of points per epoch to measure:
- `train_error`: the fraction of the evaluation images (the first `eval_images` of the training set, all of it by
  default) that the model misclassifies at that point, in eval mode, without gradients;
- `running_error` and `loss`: the misclassified fraction and the mean loss over the batches trained on since the
  previous point, as they were trained (each batch before its own update), as cuda-convnet reported training error;
- `wall_s`: the wall-clock seconds spent training up to that point (perf_counter; on a GPU the device is synchronised
  before each reading), evaluations excluded; `eval_s` is what that point's evaluation took.

A point's `epoch` is the epochs completed (steps / steps per epoch), so points within an epoch have fractions (0.25,
0.5, ...). Training stops early when the loss stops being finite (`TrainingResult.diverged` says when).

The pass name of a training run's row in the store is `TRAINING_PASS`; its curve is in the store's training_curves
table.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

#: The `pass_name` of a training run's measurement row.
TRAINING_PASS = "training"
EVAL_CHUNK = 2048  # images per evaluation forward


@dataclass(frozen=True)
class TrainingPoint:
    """One point of a training curve (the columns of the store's training_curves table)."""

    epoch: float
    step: int
    images: int
    train_error: float
    running_error: float | None
    loss: float | None
    wall_s: float
    eval_s: float
    eval_images: int


@dataclass
class TrainingResult:
    points: list[TrainingPoint] = field(default_factory=list)
    steps: int = 0
    images: int = 0  # images trained on
    wall_s: float = 0.0  # training time, evaluation excluded
    eval_s: float = 0.0  # evaluation time, all points
    steps_per_epoch: int = 0
    batch: int = 0
    diverged: str | None = None  # why training stopped early, or None

    @property
    def images_per_s(self) -> float | None:
        return self.images / self.wall_s if self.wall_s > 0 else None


def first_reaching(points: Sequence, target: float):
    """The first point whose train_error is at or below `target` (a fraction), or None."""
    for point in points:
        if point.train_error is not None and point.train_error <= target:
            return point
    return None


def eval_steps(steps_per_epoch: int, evals_per_epoch: int) -> list[int]:
    """The steps within an epoch (1-based, the last one included) after which a point is taken."""
    n = max(1, min(evals_per_epoch, steps_per_epoch))
    return sorted({max(1, round(k * steps_per_epoch / n)) for k in range(1, n + 1)})


def error_rate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, chunk: int = EVAL_CHUNK) -> float:
    """The fraction of images the model misclassifies (eval mode, no gradients); the model's mode is restored."""
    was_training = model.training
    model.eval()
    wrong = torch.zeros((), dtype=torch.int64, device=images.device)
    with torch.no_grad():
        for i in range(0, len(images), chunk):
            logits = model(images[i:i + chunk])
            wrong += (logits.argmax(dim=1) != labels[i:i + chunk]).sum()
    model.train(was_training)
    return int(wrong) / len(images)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(model: torch.nn.Module, loss_fn: Callable, optimizer: torch.optim.Optimizer, images: torch.Tensor,
          labels: torch.Tensor, *, epochs: int, batch: int, evals_per_epoch: int = 4, seed: int = 0,
          eval_images: int | None = None, progress: Callable[[TrainingPoint], None] | None = None) -> TrainingResult:
    """Train `model` (images -> logits) with `loss_fn(logits, labels)` and `optimizer` for `epochs` epochs of
    minibatches of `batch` over `images`/`labels` (already on the model's device and dtype), taking
    `evals_per_epoch` points per epoch (see the module docstring)."""
    device = images.device
    n = len(images)
    if n == 0:
        raise ValueError("no training images")
    batch = min(batch, n)
    steps_per_epoch = n // batch
    at = set(eval_steps(steps_per_epoch, evals_per_epoch))
    eval_x = images[:eval_images] if eval_images else images
    eval_y = labels[:eval_images] if eval_images else labels
    gen = torch.Generator().manual_seed(seed)
    result = TrainingResult(steps_per_epoch=steps_per_epoch, batch=batch)
    wrong = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    since = 0  # images trained on since the last point
    model.train()
    _sync(device)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen).to(device)
        start = time.perf_counter()
        for i in range(steps_per_epoch):
            idx = order[i * batch:(i + 1) * batch]
            x, y = images[idx], labels[idx]
            optimizer.zero_grad(set_to_none=True)
            logits = model(x)
            loss = loss_fn(logits, y)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                wrong += (logits.argmax(dim=1) != y).sum()
                loss_sum += loss.detach().to(torch.float64) * len(y)
            since += len(y)
            result.steps += 1
            result.images += len(y)
            if i + 1 not in at:
                continue
            _sync(device)
            result.wall_s += time.perf_counter() - start
            mean_loss = float(loss_sum) / since
            if not math.isfinite(mean_loss):
                result.diverged = (f"the training loss stopped being finite by step {result.steps} "
                                   f"(epoch {result.steps / steps_per_epoch:.3g})")
                return result
            t0 = time.perf_counter()
            error = error_rate(model, eval_x, eval_y)
            _sync(device)
            eval_s = time.perf_counter() - t0
            result.eval_s += eval_s
            point = TrainingPoint(epoch=round(result.steps / steps_per_epoch, 6), step=result.steps,
                                  images=result.images, train_error=error, running_error=int(wrong) / since,
                                  loss=mean_loss, wall_s=result.wall_s, eval_s=eval_s, eval_images=len(eval_x))
            result.points.append(point)
            if progress is not None:
                progress(point)
            wrong.zero_()
            loss_sum.zero_()
            since = 0
            start = time.perf_counter()
    return result  # the last step of every epoch is a point, so no training time is left uncounted
