"""``MambaConfig.cuda_graph``: the backbone's training forward and backward replayed from CUDA
graphs give the eager results (GPU rows), and the parts that need no GPU (CPU rows)."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from seqmodels.models import MambaConfig, MambaLM
from seqmodels.models.cuda_graph import GraphedFunction

gpu = pytest.mark.gpu


def _pair(device: torch.device, **fields) -> tuple[MambaLM, MambaLM]:
    """The same weights without and with cuda_graph."""
    torch.manual_seed(0)
    config = MambaConfig(d_model=64, n_layer=3, vocab_size=12, scan_impl="triton", **fields)
    eager = MambaLM(config).to(device).train()
    graphed = MambaLM(MambaConfig.from_dict({**config.to_dict(), "cuda_graph": True})).to(device).train()
    graphed.load_state_dict(eager.state_dict())
    return eager, graphed


def _loss(model: MambaLM, ids: torch.Tensor, autocast: bool = False) -> torch.Tensor:
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        logits = model(ids[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())


def _ids(device: torch.device, seed: int, batch: int = 4, length: int = 257) -> torch.Tensor:
    return torch.randint(7, 11, (batch, length), device=device, generator=torch.Generator(device).manual_seed(seed))


def _assert_grads_close(got: MambaLM, expected: MambaLM, bf16: bool = False) -> None:
    """Each gradient within 1e-5 (float32) or 1e-3 (bfloat16 autocast) of the eager one in norm.
    Not exact: the scan's backward sums dB / dC with atomic adds in no fixed order, which moves
    the last bit of some float32 values from run to run, and a bfloat16 rounding downstream
    makes that up to 2^-8 of an element; two eager runs differ by as much (about 3e-7 and 5e-5
    relative in norm at these shapes)."""
    expected_params = dict(expected.named_parameters())
    for name, p in got.named_parameters():
        want = expected_params[name].grad
        assert (p.grad - want).norm() <= (1e-3 if bf16 else 1e-5) * want.norm() + 1e-9, name


@gpu
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
def test_graphed_steps_match_eager_training(device, bf16):
    """Eight AdamW steps; the graph is captured at the second and replayed after. Each step
    starts both models from the same weights (the eager model's, copied in place after both
    optimizers stepped, so the replays must read the parameters' memory afresh): Adam turns the
    last-bit noise of two runs into different updates, so free-running trajectories drift apart
    whichever way the gradients are computed."""
    eager, graphed = _pair(device)
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (eager, graphed)]
    for step in range(8):
        ids = _ids(device, step)
        losses = []
        for model in (eager, graphed):
            loss = _loss(model, ids, bf16)
            loss.backward()
            losses.append(loss.detach())
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-4 if bf16 else 1e-6, atol=1e-6)
        _assert_grads_close(graphed, eager, bf16)
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for p, q in zip(graphed.parameters(), eager.parameters(), strict=True):
                p.copy_(q)
    assert graphed.backbone._graphed.capture is not None  # the later steps replayed a graph


@gpu
def test_graphed_gradient_accumulation_adds(device):
    """Two micro-batches into the same .grad: the replayed gradients are copies, not the graph's
    buffer (which the second replay overwrites)."""
    eager, graphed = _pair(device)
    for model in (eager, graphed):
        for seed in (0, 1):  # capture happens on the second call
            _loss(model, _ids(device, seed)).backward()
        model.zero_grad(set_to_none=True)
        for seed in (2, 3, 4):
            _loss(model, _ids(device, seed)).backward()
    _assert_grads_close(graphed, eager)


@gpu
def test_graphed_other_shapes_run_eagerly_and_keep_the_graph(device):
    eager, graphed = _pair(device)
    for seed in (0, 1):
        _loss(graphed, _ids(device, seed)).backward()
    capture = graphed.backbone._graphed.capture
    assert capture is not None
    for model in (eager, graphed):  # a short last batch, once: eager, graph kept
        model.zero_grad(set_to_none=True)
        _loss(model, _ids(device, 5, batch=3, length=129)).backward()
    assert graphed.backbone._graphed.capture is capture
    _assert_grads_close(graphed, eager)
    # evaluation never uses the graph
    graphed.eval()
    eager.eval()
    with torch.no_grad():
        torch.testing.assert_close(graphed(_ids(device, 6)), eager(_ids(device, 6)))


@gpu
def test_graphed_capture_while_earlier_steps_are_alive(device):
    """A caller that keeps each step's loss keeps its autograd graph, with the parameters'
    gradient accumulators bound to the default stream; the capture must not touch them."""
    eager, graphed = _pair(device)
    kept = []
    for seed in range(4):
        for model in (eager, graphed):
            model.zero_grad(set_to_none=True)
            loss = _loss(model, _ids(device, seed), autocast=True)
            loss.backward()
            kept.append(loss)
        _assert_grads_close(graphed, eager, bf16=True)
    assert graphed.backbone._graphed.capture is not None


@gpu
def test_graphed_stale_backward_raises(device):
    _, graphed = _pair(device)
    for seed in (0, 1):
        _loss(graphed, _ids(device, seed)).backward()
    first = _loss(graphed, _ids(device, 2))
    second = _loss(graphed, _ids(device, 3))  # overwrites the first forward's activations
    with pytest.raises(RuntimeError, match="ran forward again before this backward"):
        first.backward()
    second.backward()


@gpu
def test_graphed_model_deepcopies_without_its_graphs(device):
    _, graphed = _pair(device)
    for seed in (0, 1):
        _loss(graphed, _ids(device, seed)).backward()
    clone = copy.deepcopy(graphed)
    assert clone.backbone._graphed is None
    _loss(clone, _ids(device, 2)).backward()  # captures nothing yet, runs eagerly


def test_cuda_graph_excludes_checkpointing():
    with pytest.raises(ValueError, match="cuda_graph and checkpointing exclude each other"):
        MambaConfig(d_model=32, n_layer=1, vocab_size=12, cuda_graph=True, checkpointing=True)
    with pytest.raises(ValueError, match="cuda_graph must be a bool"):
        MambaConfig(d_model=32, n_layer=1, vocab_size=12, cuda_graph="yes")


def test_cuda_graph_on_cpu_runs_eagerly_and_pickles():
    """On the CPU the flag changes nothing: same loss as without it; a model that carries it
    pickles (the graphs, if any, are left out)."""
    torch.manual_seed(0)
    config = MambaConfig(d_model=32, n_layer=2, vocab_size=12, scan_impl="torch")
    plain = MambaLM(config)
    flagged = MambaLM(MambaConfig.from_dict({**config.to_dict(), "cuda_graph": True}))
    flagged.load_state_dict(plain.state_dict())
    ids = torch.randint(7, 11, (2, 33))
    for model in (plain, flagged):
        model.train()
    torch.testing.assert_close(flagged(ids), plain(ids))
    assert flagged.backbone._graphed is None
    flagged.backbone._graphed = GraphedFunction(flagged.backbone, "_blocks")
    restored = pickle.loads(pickle.dumps(flagged))
    assert restored.backbone._graphed is None
    torch.testing.assert_close(restored(ids), plain(ids))


def test_graphed_function_refuses_cpu_tensors():
    linear = torch.nn.Linear(3, 3)
    graphed = GraphedFunction(linear, "forward")
    with pytest.raises(ValueError, match="must be on a CUDA device, got cpu"):
        graphed(torch.ones(3, requires_grad=True))
