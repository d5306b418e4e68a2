"""How good a frozen representation is at facial expressions (the library under cwarp-probe).

Features of the train and test splits come from a cwarp-train checkpoint's
backbone, a randomly initialized backbone, or the raw pixels. On them:

- linear probe: multinomial logistic regression on standardized features,
  full-batch L-BFGS, weight decay chosen on a stratified 20% of the train split
  (never on test), then refit on the whole train split;
- kNN: k = 20 nearest train features by cosine similarity, votes weighted by
  exp(similarity / 0.07) as in DINO's protocol;
- retrieval mAP@R (Musgrave et al., 2020): each test image queries the train
  split; R is the number of train images with its expression.

kNN and retrieval use the same standardized features as the linear probe.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cwarp._constants import GRAY_WEIGHTS, IMAGENET_MEAN, IMAGENET_STD, KNN_K, KNN_TEMPERATURE
from cwarp.data.common import TensorFaces
from cwarp.nn.augment import per_channel

WEIGHT_DECAYS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
VALIDATION_FRACTION = 0.2
LBFGS_MAX_ITER = 100
# Beyond this many train rows the Gram matrix's eigendecomposition costs more than it saves.
ROW_SPACE_MAX_ROWS = 4096

# What the backbone sees: x / 255 normalized per channel. A checkpoint whose
# config holds "mean" and "std" overrides these: ImageNet's, for grey images
# their mean, as ContraWarpAugment averages them for one channel.
DEFAULT_MEAN = {3: IMAGENET_MEAN, 1: (sum(IMAGENET_MEAN) / 3,)}
DEFAULT_STD = {3: IMAGENET_STD, 1: (sum(IMAGENET_STD) / 3,)}


@contextlib.contextmanager
def one_thread():
    """Run the probe's arithmetic on one intra-op thread, whatever torch was set to.

    Its L-BFGS fits are thousands of small products and its eigendecomposition
    many small parallel regions: on an idle machine more threads gain little,
    on a busy one every region waits for a descheduled worker, which makes the
    probe several times slower than on one thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------- features

def _adapt_channels(images: Tensor, channels: int) -> Tensor:
    if images.shape[1] == channels:
        return images
    if images.shape[1] == 1:
        return images.expand(-1, channels, -1, -1)
    if images.shape[1] == 3 and channels == 1:
        weights = torch.tensor(GRAY_WEIGHTS, device=images.device).view(1, 3, 1, 1)
        return (images * weights).sum(1, keepdim=True)
    raise ValueError(f"cannot feed {images.shape[1]}-channel images to a {channels}-channel backbone")


def _image_batches(dataset, batch_size: int):
    """The data set's uint8 images in order, batch_size at a time: slices of an in-memory set, else a DataLoader."""
    from torch.utils.data import DataLoader

    if isinstance(dataset, TensorFaces):
        # Slicing skips the per-image indexing and collation (a sizeable share of a small model's time),
        # and draws nothing from the global RNG, as a DataLoader does for its workers' seed.
        yield from dataset.images.split(batch_size)
        return
    for images, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
        yield images


@torch.no_grad()
def extract_features(backbone: nn.Module, dataset, batch_size: int = 256, device="cpu", *,
                     mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                     progress: bool = True) -> Tensor:
    """Features (N, feature_dim) float32 on the CPU of every image of ``dataset``, in order.

    Images go in as uint8 / 255, normalized per channel by ``mean``/``std``
    (default: DEFAULT_MEAN/STD; 3 values are averaged to one for a 1-channel
    backbone, as ContraWarpAugment does), with grey images repeated to the backbone's
    channel count or colour images turned to luma. The backbone runs in eval
    mode and is restored to its previous mode afterwards.
    """
    from tqdm import tqdm

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if len(dataset) == 0:
        raise ValueError("cannot extract features of an empty data set")
    device = torch.device(device)
    channels = int(getattr(backbone, "in_channels", dataset.channels))
    default = 3 if channels == 3 else 1
    # A run's mean/std are ContraWarpAugment's (3 values for grey images too): fitted to the channels as it does.
    mean_t = torch.tensor(per_channel(mean if mean is not None else DEFAULT_MEAN[default], channels),
                          device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(per_channel(std if std is not None else DEFAULT_STD[default], channels),
                         device=device).view(1, -1, 1, 1)
    was_training = backbone.training
    backbone.eval().to(device)
    features = []
    try:
        for images in tqdm(_image_batches(dataset, batch_size), desc="features", unit="batch",
                           total=-(-len(dataset) // batch_size), disable=not progress, leave=False):
            x = _adapt_channels(images.to(device, non_blocking=True).float().div_(255.0), channels)
            features.append(backbone((x - mean_t) / std_t).float().cpu())
    finally:
        backbone.train(was_training)
    return torch.cat(features)


def pixel_features(dataset) -> Tensor:
    """The raw-pixel baseline: every image flattened, scaled to [0, 1]."""
    images = dataset.tensors()[0]
    return images.reshape(images.shape[0], -1).float().div_(255.0)


# -------------------------------------------------------------------- metrics

def _check_split(x: Tensor, y: Tensor, name: str) -> Tuple[Tensor, Tensor]:
    x = torch.as_tensor(x)
    y = torch.as_tensor(y)
    if x.dim() != 2:
        raise ValueError(f"{name}_x must be (N, F), got shape {tuple(x.shape)}")
    if y.dim() != 1 or y.numel() != x.shape[0]:
        raise ValueError(f"{name}_y must be ({x.shape[0]},), got shape {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"the {name} split is empty")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}_x holds NaN or infinite values")
    return x.detach().to("cpu", torch.float32), y.detach().to("cpu", torch.int64)


def _stratified_split(y: Tensor, fraction: float, seed: int) -> Tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    fit, val = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=generator)]
        n_val = int(round(fraction * idx.numel())) if idx.numel() >= 2 else 0
        val.append(idx[:n_val])
        fit.append(idx[n_val:])
    return torch.cat(fit).sort().values, torch.cat(val).sort().values


def _row_space(x: Tensor) -> Tuple[Tensor, Tensor]:
    """(Z, M) for X (N, F) with F > N: coordinates of the rows of X in an orthonormal basis of their span.

    An L2-penalized linear model's optimal weights lie in the span of the
    training rows, so fitting on Z (N x r) instead of X (N x F) gives the same
    predictions, much faster. With the Gram matrix X X^T = U diag(s) U^T, the
    basis is V = X^T U diag(s)^-1/2, Z = X V = U diag(s)^1/2, and other rows X'
    have coordinates X' V = (X' X^T) M with M = U diag(s)^-1/2. Directions with
    s below 1e-6 of the largest are float32 rounding noise (centred features
    always have one) and are dropped.
    """
    evals, evecs = torch.linalg.eigh((x @ x.T).double())
    keep = evals > evals.max() * 1e-6
    evals, evecs = evals[keep], evecs[:, keep]
    return (evecs * evals.sqrt()).float(), (evecs / evals.sqrt()).float()


def _fit_logistic(x: Tensor, y: Tensor, num_classes: int, weight_decay: float,
                  init: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
    """Multinomial logistic regression, mean cross-entropy + weight_decay / 2 * |W|^2 (bias free), by L-BFGS."""
    n = x.shape[0]
    # The gradient is written out: autograd's backward of the skinny product
    # X^T (P - Y) through a transposed view is several times slower than X^T
    # kept contiguous, and the probe spends nearly all its time here.
    xt = x.T.contiguous()
    onehot = F.one_hot(y, num_classes).to(x.dtype)
    w = init[0].clone() if init else torch.zeros(x.shape[1], num_classes, dtype=x.dtype)
    b = init[1].clone() if init else torch.zeros(num_classes, dtype=x.dtype)
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=LBFGS_MAX_ITER, history_size=20,
                                  tolerance_grad=1e-5, tolerance_change=1e-7, line_search_fn="strong_wolfe")

    def closure():
        log_p = torch.addmm(b, x, w).log_softmax(1)
        loss = -(log_p * onehot).sum() / n + 0.5 * weight_decay * w.square().sum()
        residual = log_p.exp_().sub_(onehot).div_(n)
        w.grad = torch.addmm(w, xt, residual, beta=weight_decay)
        b.grad = residual.sum(0)
        return loss

    optimizer.step(closure)
    return w, b


def _predict(x: Tensor, model: Tuple[Tensor, Tensor]) -> Tensor:
    return torch.addmm(model[1], x, model[0]).argmax(1)


def linear_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, num_classes: int, *, seed: int = 0,
                 cross: Optional[Tensor] = None) -> Tuple[Tensor, float, Dict[str, float]]:
    """Test predictions, the chosen weight decay and the validation accuracy of each one tried.

    ``cross`` (test_x @ train_x.T), when given, spares recomputing it for wide features.
    """
    fit_idx, val_idx = _stratified_split(train_y, VALIDATION_FRACTION, seed)
    if _use_row_space(train_x):
        z, to_basis = _row_space(train_x)
        test_x = (cross if cross is not None else test_x @ train_x.T) @ to_basis
        train_x = z
    val_acc: Dict[str, float] = {}
    best_wd, best_acc = WEIGHT_DECAYS[0], -1.0
    if val_idx.numel() > 0 and fit_idx.numel() > 0:
        model = None
        # Strongest penalty first, each fit warm-starting the next: the path is smooth.
        for wd in WEIGHT_DECAYS:
            model = _fit_logistic(train_x[fit_idx], train_y[fit_idx], num_classes, wd, model)
            acc = (_predict(train_x[val_idx], model) == train_y[val_idx]).float().mean().item()
            val_acc[f"{wd:g}"] = acc
            if acc > best_acc:  # ties keep the stronger penalty
                best_wd, best_acc = wd, acc
    model = _fit_logistic(train_x, train_y, num_classes, best_wd)
    return _predict(test_x, model), best_wd, val_acc


def _use_row_space(train_x: Tensor) -> bool:
    return train_x.shape[0] < train_x.shape[1] and train_x.shape[0] <= ROW_SPACE_MAX_ROWS


def standardize(train_x: Tensor, test_x: Tensor) -> Tuple[Tensor, Tensor]:
    """Both splits shifted and scaled per feature by the train split's mean and standard deviation."""
    mean = train_x.mean(0)
    std = train_x.std(0, unbiased=False).clamp_(min=1e-6)
    return (train_x - mean) / std, (test_x - mean) / std


def _cosine_similarities(queries: Tensor, keys: Tensor, cross: Optional[Tensor] = None, chunk: int = 1024):
    """Chunks (start, cos(queries[start:start+chunk], keys)); from ``cross`` = queries @ keys.T when given."""
    if cross is not None:
        scale = 1.0 / (queries.norm(dim=1, keepdim=True) * keys.norm(dim=1)).clamp_(min=1e-12)
        for start in range(0, queries.shape[0], chunk):
            yield start, cross[start:start + chunk] * scale[start:start + chunk]
        return
    q = F.normalize(queries, dim=1)
    k = F.normalize(keys, dim=1)
    for start in range(0, q.shape[0], chunk):
        yield start, q[start:start + chunk] @ k.T


def neighbour_scores(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, num_classes: int, *,
                     k: int = KNN_K, temperature: float = KNN_TEMPERATURE, cross: Optional[Tensor] = None
                     ) -> Tuple[Tensor, float]:
    """kNN predictions and mAP@R from one pass over the test-train cosine similarities.

    mAP@R averages, over test queries, AP@R against the train split with R the
    number of train images of the query's class; queries of a class absent from
    train are left out.
    """
    k = min(k, train_x.shape[0])
    counts = torch.bincount(train_y, minlength=num_classes)
    r_of_query = counts[test_y]
    r_max = int(r_of_query.max())
    ranks = torch.arange(1, max(r_max, k) + 1, dtype=torch.float32)
    predictions, ap_sum, n_queries = [], 0.0, 0
    for start, sims in _cosine_similarities(test_x, train_x, cross):
        top, idx = sims.topk(max(r_max, k), dim=1)
        votes = torch.zeros(sims.shape[0], num_classes)
        votes.scatter_add_(1, train_y[idx[:, :k]], (top[:, :k] / temperature).exp())
        predictions.append(votes.argmax(1))
        if r_max == 0:
            continue
        y = test_y[start:start + sims.shape[0]]
        r = r_of_query[start:start + sims.shape[0]]
        relevant = (train_y[idx[:, :r_max]] == y.unsqueeze(1)).float()
        relevant *= (ranks[:r_max].unsqueeze(0) <= r.unsqueeze(1)).float()
        precision = relevant.cumsum(1) / ranks[:r_max]
        ap = (precision * relevant).sum(1) / r.clamp(min=1)
        valid = r > 0
        ap_sum += ap[valid].sum().item()
        n_queries += int(valid.sum())
    return torch.cat(predictions), (ap_sum / n_queries if n_queries else float("nan"))


def knn_predict(train_x: Tensor, train_y: Tensor, test_x: Tensor, num_classes: int, k: int = KNN_K,
                temperature: float = KNN_TEMPERATURE) -> Tensor:
    """Weighted kNN by cosine similarity (DINO's protocol)."""
    dummy = torch.zeros(test_x.shape[0], dtype=torch.int64)
    return neighbour_scores(train_x, train_y, test_x, dummy, num_classes, k=k, temperature=temperature)[0]


def map_at_r(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, num_classes: int) -> float:
    """Retrieval mAP@R of test queries against the train split (Musgrave et al., 2020)."""
    return neighbour_scores(train_x, train_y, test_x, test_y, num_classes)[1]


def evaluate_features(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, num_classes: int, *,
                      seed: int = 0, class_names: Optional[Sequence[str]] = None) -> dict:
    """Linear-probe, kNN and retrieval scores of in-memory features.

    Returns a dict with linear_acc, knn_acc, map_at_r, per_class_acc (linear,
    by class name; None for a class absent from test), confusion (linear,
    rows = true class), predictions (the linear probe's class for each test
    row, in order: what paired tests between two representations compare),
    weight_decay, val_acc (per weight decay tried), n_train, n_test,
    feature_dim.
    """
    with one_thread():
        return _evaluate(train_x, train_y, test_x, test_y, num_classes, seed, class_names)


def _evaluate(train_x, train_y, test_x, test_y, num_classes, seed, class_names) -> dict:
    train_x, train_y = _check_split(train_x, train_y, "train")
    test_x, test_y = _check_split(test_x, test_y, "test")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train features have {train_x.shape[1]} dimensions, test features {test_x.shape[1]}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    for name, y in (("train", train_y), ("test", test_y)):
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise ValueError(f"{name} labels must lie in 0..{num_classes - 1}, got {int(y.min())}..{int(y.max())}")
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")

    train_x, test_x = standardize(train_x, test_x)
    # For wide features both the linear probe and the neighbours need test @ train.T: compute it once.
    cross = test_x @ train_x.T if _use_row_space(train_x) else None
    linear_pred, wd, val_acc = linear_probe(train_x, train_y, test_x, num_classes, seed=seed, cross=cross)
    knn_pred, mean_ap = neighbour_scores(train_x, train_y, test_x, test_y, num_classes, cross=cross)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    confusion.index_put_((test_y, linear_pred), torch.ones_like(test_y), accumulate=True)
    support = confusion.sum(1)
    per_class = {names[c]: (confusion[c, c].item() / support[c].item() if support[c] > 0 else None)
                 for c in range(num_classes)}
    return {
        "linear_acc": (linear_pred == test_y).float().mean().item(),
        "knn_acc": (knn_pred == test_y).float().mean().item(),
        "map_at_r": mean_ap,
        "per_class_acc": per_class,
        "confusion": confusion.tolist(),
        "predictions": linear_pred.tolist(),
        "classes": names,
        "weight_decay": wd,
        "val_acc": val_acc,
        "n_train": int(train_x.shape[0]),
        "n_test": int(test_x.shape[0]),
        "feature_dim": int(train_x.shape[1]),
    }


def save_confusion_png(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: str, title: str = "") -> None:
    """The confusion matrix, rows normalized to recall, counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = torch.tensor(confusion, dtype=torch.float64)
    rates = counts / counts.sum(1, keepdim=True).clamp(min=1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n, 0.8 + 0.7 * n))
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
