"""Any timm model: blocks cut from the model's own structure, the fallback family (registered last).

The model's pre-logits function ``forward_head(forward_features(x), pre_logits=True)`` is traced with ``torch.fx``
(timm's no-trace modules and functions stay leaves). A node belongs to a *unit*: the innermost module reached from
the model through a chain of trunk containers (``nn.Sequential``/``ModuleList``/``ModuleDict`` of composite modules,
stages holding such a container, top-level ``feature_info`` stages): the stem's modules are not units, each block of
each stage is one, norm/pool after the trunk are not. The graph is cut where a new unit starts and where the tail
starts, but only at single-tensor boundaries (exactly one value crosses; nodes that do not depend on the input, such
as parameters and position tables, are recomputed in every piece that uses them). Each piece is a ``GraphModule``
holding the model's own submodules under their own names, so the cut is deterministic and works on the meta device.
:func:`check_split` verifies a split on a real probe; a model that cannot be cut exactly is refused with a StoreError.
"""

from __future__ import annotations

import hashlib
import operator
from typing import Any, Sequence

import torch
from torch import fx, nn

from ..errors import StoreError
from ._registry import BlockFamily, register_family

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_ROOT = "model"  # the traced wrapper's attribute holding the model; stripped from every name


class _PreLogits(nn.Module):
    """The traced function: a timm model's pre-logits features."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


class _Tracer(fx.Tracer):
    """``torch.fx`` tracer that keeps timm's registered no-trace modules and functions as leaves."""

    def __init__(self) -> None:
        from timm.layers import get_notrace_functions, get_notrace_modules
        super().__init__(autowrap_functions=tuple(f for f in get_notrace_functions() if callable(f)))
        self._leaves = tuple(get_notrace_modules())

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, self._leaves) or super().is_leaf_module(m, module_qualified_name)


def trace_prelogits(model: nn.Module) -> tuple[nn.Module, fx.Graph]:
    """The traced wrapper of ``model`` and its graph; a StoreError naming the reason when fx cannot trace it."""
    root = _PreLogits(model)
    try:
        return root, _Tracer().trace(root)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means the model cannot be cut generically
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise StoreError(f"cannot split a {_kind(model)} into blocks: torch.fx cannot trace its pre-logits forward "
                         f"({type(exc).__name__}: {reason[:200]}). Register a BlockFamily for it with "
                         "alsatian_pl.blocks.register_family.") from None


def _kind(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("architecture") if isinstance(cfg, dict) else None
    return f"{type(model).__module__}.{type(model).__name__}" + (f" ({name})" if name else "")


def _is_container(module: nn.Module, top_stages: set[str], name: str) -> bool:
    """A trunk container: its children are units (blocks) that run one after the other. ``top_stages``: names of
    ``feature_info`` stages and of the containers holding them (VGG's ``features``, a sequence of plain layers)."""
    children = list(module.children())
    composite = any(next(c.children(), None) is not None for c in children)
    if isinstance(module, _CONTAINERS):
        return composite or name in top_stages
    return name in top_stages and composite or any(
        isinstance(c, _CONTAINERS) and _is_container(c, set(), "") for c in children)


def _top_stages(model: nn.Module) -> set[str]:
    """Top-level ``feature_info`` modules (stages such as RegNet's ``s1``) and the containers of the others, as
    wrapper-qualified names."""
    info = getattr(model, "feature_info", None) or []
    names = {d.get("module", "") for d in info if isinstance(d, dict)}
    return {f"{_ROOT}.{n}" if "." not in n else f"{_ROOT}.{n.rpartition('.')[0]}" for n in names if n}


def _unit_of(node: fx.Node, root: nn.Module, memo: dict[str, bool], top: set[str]) -> str | None:
    """The unit of a node: along the dotted path of the innermost module it runs in, the innermost module reached
    through an unbroken chain of containers (a ``ModuleList`` is iterated, not called, so paths, not calls, count)."""
    stack = [name for name, _ in node.meta.get("nn_module_stack", {}).values()]
    if not stack:
        return None
    parts = stack[-1].split(".")
    unit = None
    for depth in range(2, len(parts)):
        outer = ".".join(parts[:depth])
        if outer not in memo:
            memo[outer] = _is_container(root.get_submodule(outer), top, outer)
        if not memo[outer]:
            break
        unit = f"{outer}.{parts[depth]}"
    return unit


def _free_nodes(graph: fx.Graph) -> set[fx.Node]:
    """Nodes that do not depend on the input (parameters, constants, tables made from them): recomputed per piece."""
    free: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "get_attr" or node.op in ("call_function", "call_method", "call_module") and all(
                a in free for a in node.all_input_nodes):
            free.add(node)
    return free


def _batch_nodes(inp: fx.Node) -> set[fx.Node]:
    """``x.shape[0]`` / ``x.size(0)`` of the input: the batch size, which every piece reads off its own input."""
    out = set()
    for user in inp.users:
        if user.op == "call_method" and user.target == "size" and user.args[1:] == (0,):
            out.add(user)
        if user.op == "call_function" and user.target is getattr and user.args[1:] == ("shape",) or (
                user.op == "call_method" and user.target == "size" and len(user.args) == 1):
            out.update(u for u in user.users if u.op == "call_function" and u.target is operator.getitem
                       and u.args[1:] == (0,))
    return out


def _crossing(order: list[fx.Node], free: set[fx.Node]) -> list[set[fx.Node]]:
    """For each boundary b (before ``order[b]``), the non-free values made before b and used at or after b."""
    pos = {n: i for i, n in enumerate(order)}
    end = len(order)
    last = {n: max((pos.get(u, end) for u in n.users), default=-1) for n in order}
    live: list[set[fx.Node]] = [set() for _ in range(end + 1)]
    for n, i in pos.items():
        if n not in free:
            for b in range(i + 1, last[n] + 1):
                live[b].add(n)
    return live


def _is_tensor_value(node: fx.Node) -> bool:
    """Static guess that a node is a tensor, not a tuple or a size (the self-check confirms it)."""
    if node.op == "call_method" and node.target in ("size", "dim", "numel", "unbind", "chunk", "split"):
        return False
    if node.op == "call_function" and node.target in (getattr, len, torch.unbind, torch.chunk, torch.split):
        return False
    users = list(node.users)
    return not users or not all(u.op == "call_function" and u.target is operator.getitem
                                and isinstance(u.args[1], int) for u in users)


def _boundaries(order: list[fx.Node], units: list[str | None], live: list[set[fx.Node]]) -> list[int]:
    """Cut positions: where a new unit starts, and where the tail after the last unit starts, if one value crosses."""
    trunk = [i for i, u in enumerate(units) if u is not None]
    wanted = {i for i in trunk if i > 0 and units[i] != units[i - 1] and units[i] is not None}
    if trunk and trunk[-1] + 1 < len(order):
        wanted.add(trunk[-1] + 1)
    cuts = []
    for b in sorted(wanted):
        (value,) = live[b] if len(live[b]) == 1 else (None,)
        if value is not None and value.op != "placeholder" and _is_tensor_value(value):
            cuts.append(b)
    return cuts


def _piece(root: nn.Module, order: list[fx.Node], span: tuple[int, int], inp: fx.Node, out: fx.Node,
           batch: set[fx.Node]) -> nn.Module:
    """The graph of ``order[start:stop]`` as a module: ``inp``'s value in, ``out``'s value out; free nodes it uses
    are copied in, the batch size is read off its input; the model's submodules and tensors keep their names."""
    graph, env, attrs = fx.Graph(), {}, {}
    env[inp] = graph.placeholder("x")
    start, stop = span

    def value(n: fx.Node) -> fx.Node:
        if n in batch and n not in env:
            env[n] = graph.call_function(operator.getitem, (graph.call_function(getattr, (env[inp], "shape")), 0))
        if n not in env:  # a free node (or one made earlier in this piece): copy it, and its own inputs, here
            env[n] = graph.node_copy(n, value)
            if n.op in ("get_attr", "call_module"):
                attrs[env[n]] = n.target
        return env[n]

    for node in order[start:stop]:
        value(node)
    graph.output(value(out))
    targets = {}
    for node, target in attrs.items():
        name = target.removeprefix(_ROOT + ".")
        node.target = name
        targets[name] = _get(root, target)
    graph.lint()
    code = hashlib.sha256(graph.python_code("self").src.encode()).hexdigest()[:12]  # in repr, so in the block's spec
    return fx.GraphModule(targets, graph, class_name=f"GenericBlock_{code}")


def _get(root: nn.Module, target: str) -> Any:
    owner, _, leaf = target.rpartition(".")
    return getattr(root.get_submodule(owner) if owner else root, leaf)


def generic_split(model: nn.Module) -> list[nn.Module]:
    """Cut a timm model into its ordered blocks (see the module docstring); a StoreError when it cannot be."""
    root, graph = trace_prelogits(model)
    (inp,) = [n for n in graph.nodes if n.op == "placeholder"] or [None]
    (output,) = [n for n in graph.nodes if n.op == "output"]
    result = output.args[0]
    if inp is None or not isinstance(result, fx.Node):
        raise StoreError(f"cannot split a {_kind(model)} into blocks: its pre-logits forward does not map one input "
                         "tensor to one output tensor")
    free, batch = _free_nodes(graph), _batch_nodes(inp)
    order = [n for n in graph.nodes if n.op != "output" and n not in free]
    memo: dict[str, bool] = {}
    top = _top_stages(model)
    units = [None if n is inp else _unit_of(n, root, memo, top) for n in order]
    live = _crossing(order, free | batch)
    cuts = [1, *_boundaries(order, units, live), len(order)]
    value = {1: inp, len(order): result, **{b: next(iter(live[b])) for b in cuts[1:-1]}}
    blocks: list[nn.Module] = []
    start = 1
    for stop in cuts[1:]:  # a piece without tensors (a pooling, a permute) joins the next piece; the tail stays
        piece = _piece(root, order, (start, stop), value[start], value[stop], batch)
        if stop == len(order) or next(piece.parameters(), None) is not None or next(piece.buffers(), None) is not None:
            blocks.append(piece)
            start = stop
    if len(blocks) < 2:
        raise StoreError(f"cannot split a {_kind(model)} into blocks: its traced graph has no single-tensor boundary "
                         "between its stem, its stage blocks and its head")
    return blocks


@register_family
class GenericFamily(BlockFamily):
    """Any timm model (``forward_features`` + ``forward_head``): the fx-graph cut above; tried after every other
    family. Its blocks compose to the pre-logits features; :func:`check_split` confirms it on a probe."""

    name = "generic"

    def matches(self, model: nn.Module) -> bool:
        return callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None))

    def split(self, model: nn.Module) -> list[nn.Module]:
        return generic_split(model)


def check_split(model: nn.Module, blocks: Sequence[nn.Module], input_size: Sequence[int], *,
                rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """Composing ``blocks`` must equal ``forward_head(forward_features(x), pre_logits=True)`` on a random probe
    ``x`` of 3 items of ``input_size`` (eval mode, the model's device); else a StoreError.
    Hugging Face vision encoders: the features their image-classification head reads (``_hf_vision.hf_features``).
    A no-op for meta-device models and Hugging Face text encoders (their items are token ids)."""
    reference = _reference_of(model)
    if reference is None or any(t.is_meta for t in model.parameters()):
        return
    param = next(model.parameters(), None)
    x = torch.randn((3, *input_size), generator=torch.Generator().manual_seed(0))
    x = x.to(param.device if param is not None else "cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected, out = reference(x), _compose(model, blocks, x)
    finally:
        model.train(was_training)
    scale = max(float(expected.abs().max()) if expected.numel() else 1.0, 1.0)
    if out.shape != expected.shape or not torch.allclose(out, expected, rtol=rtol, atol=atol * scale):
        diff = (out - expected).abs().max().item() if out.shape == expected.shape else f"shape {tuple(out.shape)}"
        raise StoreError(f"cannot split a {_kind(model)} exactly: its {len(blocks)} composed blocks differ from "
                         f"its pre-logits features (max difference {diff} vs {tuple(expected.shape)}); refused")


def _reference_of(model: nn.Module) -> Any:
    """The function giving the features a model's blocks must compose to, or None when there is no such check."""
    from ._hf_vision import hf_features, vision_kind
    if GenericFamily().matches(model):
        return lambda x: _reference(model, x)
    if vision_kind(model) is not None:
        return lambda x: _reference(model, x, hf_features)
    return None


def _reference(model: nn.Module, x: torch.Tensor, features: Any = None) -> torch.Tensor:
    try:
        if features is not None:
            return features(model, x)
        return model.forward_head(model.forward_features(x), pre_logits=True)
    except Exception as exc:  # noqa: BLE001 - the model itself does not take this input size
        raise StoreError(f"{_kind(model)} cannot run on inputs of size {list(x.shape[1:])} ({type(exc).__name__}: "
                         f"{exc}). Choose an input size the architecture accepts.") from None


def _compose(model: nn.Module, blocks: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    size = list(x.shape[1:])
    try:
        for i, block in enumerate(blocks):
            x = block(x)
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"block {i} returns a {type(x).__name__}, not one tensor")
        return x
    except Exception as exc:  # noqa: BLE001 - any failure of the blocks on the probe means the split is unusable
        raise StoreError(f"cannot split a {_kind(model)} exactly: running its {len(blocks)} blocks on a probe of "
                         f"size {size} failed ({type(exc).__name__}: {exc})") from None
