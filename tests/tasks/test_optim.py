"""The tasks' optimizer: fused AdamW where it can run, and gradient clipping that works with it."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import SingleDeviceStrategy

from seqmodels.tasks.optim import ClipsFusedAdamW, adamw_warmup_cosine


class _Task(ClipsFusedAdamW, L.LightningModule):
    def __init__(self, scaler=None) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, 3)
        self.save_hyperparameters({"lr": 1e-3, "betas": (0.9, 0.95), "weight_decay": 0.1, "warmup_steps": 2,
                                   "min_lr_ratio": 0.1})
        self._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=scaler), estimated_stepping_batches=10,
                                        strategy=SingleDeviceStrategy("cpu"))


def _with_grads(task: _Task, scale: float) -> list[torch.Tensor]:
    params = list(task.parameters())
    for p in params:
        p.grad = torch.full_like(p, scale)
    return params


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_clipping_with_a_fused_optimizer(algorithm):
    task = _Task()
    params = _with_grads(task, 3.0)
    optimizer = torch.optim.AdamW(params, fused=True)  # fused AdamW also runs on the CPU
    task.configure_gradient_clipping(optimizer, 0.5, algorithm)
    grads = torch.cat([p.grad.flatten() for p in params])
    if algorithm == "norm":
        assert grads.norm().item() == pytest.approx(0.5, rel=1e-4)
    else:
        assert grads.abs().max().item() == pytest.approx(0.5)
    _with_grads(task, 3.0)
    task.configure_gradient_clipping(optimizer, None, algorithm)  # no clipping asked: untouched
    assert all((p.grad == 3.0).all() for p in params)


def test_cpu_parameters_get_the_multi_tensor_adamw():
    task = _Task()
    optimizer = adamw_warmup_cosine(task, task.net)["optimizer"]
    assert not optimizer.defaults["fused"]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]  # weight, then bias


@pytest.mark.gpu
def test_cuda_parameters_get_the_fused_adamw_unless_a_scaler_runs():
    task = _Task().cuda()
    assert adamw_warmup_cosine(task, task.net)["optimizer"].defaults["fused"]
    scaled = _Task(scaler=torch.amp.GradScaler("cuda")).cuda()
    assert not adamw_warmup_cosine(scaled, scaled.net)["optimizer"].defaults["fused"]
    sharded = _Task().cuda()
    sharded._trainer.strategy = object()  # e.g. FSDP: gradients sharded across ranks
    assert not adamw_warmup_cosine(sharded, sharded.net)["optimizer"].defaults["fused"]


def test_cuda_graph_backbone_refuses_several_devices():
    from seqmodels.models import MambaConfig
    from seqmodels.models.lm import MambaBackbone

    task = _Task()
    task.net = MambaBackbone(MambaConfig(d_model=16, n_layer=1, vocab_size=12, cuda_graph=True))
    task._trainer.world_size = 2
    with pytest.raises(ValueError, match="cuda_graph: CUDA graphs are captured for one device.*2 processes"):
        adamw_warmup_cosine(task, task.net)
    task._trainer.world_size = 1
    adamw_warmup_cosine(task, task.net)
