"""Per-layer summaries, costs and receptive fields of any flax model, from its jaxpr.

`summary(model, input_shape)` traces one inference forward pass abstractly
(`jax.make_jaxpr` on `jax.ShapeDtypeStruct`s: nothing is computed, so ResNet-152 costs a
trace, not a forward pass) under `flax.linen.intercept_methods`, which wraps every module
call in a `jax.named_scope` of its own. Every equation of the jaxpr thus knows the module
call it belongs to, and the rows follow from that:

- a module call that calls no other module (Conv, Dense, BatchNorm, LocalResponseNorm, ...)
  is one row, whatever it computes inside;
- the functional ops between module calls (pooling, global averages, flatten and reshape,
  concatenation, residual additions, functional convolutions) are one row each; a helper
  that wraps several ops in a `jax.named_scope` (`layers.adaptive_avg_pool`) is one row;
- elementwise ops applied to one activation (ReLU and other activations, the division of an
  average, casts) are folded into the row that produced their input, as Keras' `activation=`
  and the course's tables do ("conv +relu").

Why the jaxpr rather than `nn.tabulate` or module hooks alone: functional pools, flatten and
residual additions are not module calls, so hooks miss them (`nn.tabulate` omits them);
every op, however written, is an equation of the jaxpr, so no layer can be missed and the
multiply-adds of every convolution and matrix product are counted exactly.

Conventions (the course's; also stated in the README):

- MACs: multiply-accumulates; one MAC = 2 FLOPs. A convolution costs (output positions) x
  (kernel positions) x (input channels per group) x (output channels), padding taps included
  (the papers' convention; XLA's `cost_analysis` skips taps that fall in the padding), a
  transposed convolution (input positions) x kernel x channels; a Dense layer in x out per
  example. Only convolutions and matrix products count: BatchNorm, pooling, activations and
  additions are 0 MACs (XLA counts them as FLOPs, a fraction of a percent in these CNNs).
- Parameters are the `params` collection; "state" is every other collection (BatchNorm's
  running statistics), shown apart so Keras' Param# (which counts both) is params + state.
- Activations: the values each row's output holds, input included; reshapes and flatten are
  views (0 new values), elementwise ops folded into a row are in place. Bytes use the compute
  dtype (the model's `dtype` field), MB = 10**6 bytes.
- Training footprint: the bytes `jax.vjp` keeps for the backward pass of a train-mode
  forward (its residuals), per image (batch-2 minus batch-1 residuals, so parameters cancel).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal

from jaxcnn.errors import InputError
from jaxcnn.models.registry import create_model, get_model_spec

_MARK = "jaxcnn.summary#"  # name-scope prefix of one intercepted module call

# Ops that start a row of their own when applied to an activation at module level.
_REDUCTIONS = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin"}
_POOLS = {"reduce_window_max", "reduce_window_min", "reduce_window_sum", "reduce_window"}
_OWN_ROW = (
    {"conv_general_dilated", "dot_general", "concatenate", "reshape", "pad", "cumsum", "sort"}
    | _REDUCTIONS
    | _POOLS
)
# Binary ops that start a row when two or more operands are activations (x + shortcut).
_BINARY = {"add", "add_any", "sub", "mul", "div", "max", "min", "pow", "rem", "atan2"}
_POOL_NAMES = {
    "reduce_window_max": "max_pool", "reduce_window_min": "min_pool",
    "reduce_window_sum": "sum_pool", "reduce_window": "pool",
}  # fmt: skip
_CALL_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")
# Elementwise primitives named in a row's label ("+relu") by their layer name; _PLAIN ones are
# the arithmetic inside activations and normalizations, and layout changes.
_FRIENDLY = {"logistic": "sigmoid", "erf": "gelu", "erfc": "gelu"}
_PLAIN = {
    "add", "sub", "mul", "div", "neg", "max", "min", "integer_pow", "sqrt", "rsqrt", "square",
    "convert_element_type", "copy", "copy_p", "broadcast_in_dim", "squeeze", "expand_dims",
    "select_n", "stop_gradient", "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not",
    "sign", "abs", "exp", "log", "slice", "transpose", "gather", "dynamic_slice", "clamp",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One layer of a `Summary`: shapes include the batch; counts are for the whole batch."""

    index: int
    name: str  # module path ("features_0", "layer1_0/conv1") or parent path + op
    kind: str  # module class or op, with kernel/stride ("Conv 11x11/4", "max_pool 3x3/2")
    output_shape: tuple[int, ...]
    params: int  # trainable parameters (the `params` collection)
    weights: int  # params less biases: what the course's tables call a layer's weights
    state: int  # other variables: BatchNorm running statistics
    activations: int  # values the output holds (0 for views)
    activation_bytes: int  # in the compute dtype
    macs: int  # multiply-accumulates (1 MAC = 2 FLOPs)
    macs_unpadded: int  # the same without convolution taps on padding (XLA's count)
    fused: tuple[str, ...] = ()  # elementwise ops folded in ("relu",)
    receptive_field: tuple[float, ...] | None = None  # (H, W) extent in input pixels
    jump: tuple[float, ...] | None = None  # (H, W) input pixels between adjacent outputs
    start: tuple[float, ...] | None = None  # (H, W) centre of the first output's field

    @property
    def label(self) -> str:
        """The kind with its folded elementwise ops ("Conv 3x3/1 +relu")."""
        return self.kind + "".join(f" +{f}" for f in self.fused)


class _Rows:
    """A table's `rows` as a sequence: iteration, len() and indexing give the `LayerRow`s."""

    rows: tuple[LayerRow, ...]

    def __iter__(self) -> Iterator[LayerRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> LayerRow:
        return self.rows[index]


@dataclasses.dataclass(frozen=True)
class Summary(_Rows):
    """Rows of a model summary plus totals; iterating gives the `LayerRow`s and `str()` the
    table."""

    model: str
    rows: tuple[LayerRow, ...]
    input_shape: tuple[int, ...]  # (batch, H, W, C)
    dtype: str  # compute dtype of the activations
    params: int
    param_bytes: int
    state: int
    macs: int  # for the batch
    macs_unpadded: int  # for the batch, convolution taps on padding skipped (as XLA)
    activations: int  # forward values for the batch, input included
    activation_bytes: int
    training_bytes_per_image: int | None  # residuals kept for the backward pass

    @property
    def batch_size(self) -> int:
        """The batch the rows were traced with."""
        return self.input_shape[0]

    @property
    def macs_per_image(self) -> int:
        """Multiply-accumulates of one image's forward pass."""
        return self.macs // self.batch_size

    @property
    def flops_per_image(self) -> int:
        """2 x MACs: one multiply-add is two floating-point operations."""
        return 2 * self.macs_per_image

    @property
    def activations_per_image(self) -> int:
        """Forward activation values per image, input included."""
        return self.activations // self.batch_size

    @property
    def activation_bytes_per_image(self) -> int:
        """Forward activation bytes per image in the compute dtype."""
        return self.activation_bytes // self.batch_size

    def table(self) -> str:
        """The summary as a text table with a totals footer."""
        head = ("#", "layer", "type", "output", "params", "state", "activations", "MB", "MACs")
        lines = [head]
        for r in self.rows:
            lines.append((
                str(r.index), r.name, r.label, "x".join(map(str, r.output_shape[1:])) or "-",
                f"{r.params:,}", f"{r.state:,}" if r.state else "",
                f"{r.activations:,}", _mb(r.activation_bytes), f"{r.macs:,}",
            ))  # fmt: skip
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        right = {0, 4, 5, 6, 7, 8}

        def fmt(line: tuple[str, ...]) -> str:
            cells = [c.rjust(w) if i in right else c.ljust(w)
                     for i, (c, w) in enumerate(zip(line, widths, strict=True))]  # fmt: skip
            return "  ".join(cells).rstrip()

        rule = "-" * len(fmt(head))
        b = self.batch_size
        per = "" if b == 1 else f" (batch of {b}: rows count the whole batch)"
        out = [f"{self.model}: input {'x'.join(map(str, self.input_shape[1:]))}{per}, "
               f"activations in {self.dtype}", rule, fmt(head), rule]  # fmt: skip
        out += [fmt(line) for line in lines[1:]]
        out += [
            rule,
            f"Parameters: {self.params:,} ({_mb(self.param_bytes)} MB)"
            + (f"; state (BatchNorm statistics): {self.state:,}" if self.state else ""),
            f"MACs per image: {self.macs_per_image:,} ({self.macs_per_image / 1e9:.2f} G); "
            f"FLOPs = 2 x MACs = {self.flops_per_image / 1e9:.2f} G",
            f"Forward activations per image: {self.activations_per_image:,} values, "
            f"{_mb(self.activation_bytes_per_image)} MB",
        ]
        if self.training_bytes_per_image is not None:
            out.append(f"Training, saved for the backward pass per image: "
                       f"{_mb(self.training_bytes_per_image)} MB (jax.vjp residuals)")  # fmt: skip
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table()


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:,.1f}" if nbytes >= 50_000 else f"{nbytes / 1e6:.3f}"


# ---------------------------------------------------------------------------------------
# Tracing


@dataclasses.dataclass
class _Call:
    path: tuple[str, ...]
    type: str
    method: str
    leaf: bool = True
    output: tuple[tuple[int, ...], ...] = ()


@dataclasses.dataclass
class _Row:
    name: str
    kind: str
    path: tuple[str, ...]
    shape: tuple[int, ...]
    view: bool = False
    macs: int = 0
    macs_unpadded: int = 0
    fused: list[str] = dataclasses.field(default_factory=list)
    last: Any = None  # the var holding the row's output
    call: int | None = None


def _resolve(model: nn.Module | str | Sequence[Any], input_shape: Sequence[int] | None
             ) -> tuple[nn.Module, str, tuple[int, ...]]:  # fmt: skip
    if isinstance(model, str):
        spec = get_model_spec(model)
        return create_model(model), model, tuple(input_shape or spec.input_shape)
    if not isinstance(model, nn.Module):
        if isinstance(model, Sequence) and model:
            model = nn.Sequential(list(model))
        else:
            raise InputError(
                f"expected a flax module, a registered model name or a list of layers; got "
                f"{type(model).__name__}."
            )
    if input_shape is None:
        raise InputError(
            f"{type(model).__name__}: give input_shape=(H, W, C); only registered model names "
            f"have a default."
        )
    return model, type(model).__name__, tuple(input_shape)


def _call_kwargs(model: nn.Module, train: bool) -> dict:
    params = inspect.signature(model.__call__).parameters
    return {"train": train} if "train" in params else {}


def _abstract(model: nn.Module, x: jax.ShapeDtypeStruct) -> dict:
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    kwargs = _call_kwargs(model, False)
    return dict(jax.eval_shape(lambda r, x: model.init(r, x, **kwargs), rngs, x))


def _trace(model: nn.Module, variables: dict, x: jax.ShapeDtypeStruct
           ) -> tuple[ClosedJaxpr, list[_Call]]:  # fmt: skip
    """The inference jaxpr with every module call in a named scope `_MARK<k>`."""
    calls: list[_Call] = []
    stack: list[int] = []

    def interceptor(next_fun: Callable, args: tuple, kwargs: dict, context: Any) -> Any:
        if context.method_name == "setup":
            return next_fun(*args, **kwargs)
        k = len(calls)
        # A Sequential is a container, never a layer, even when it holds only functions.
        calls.append(_Call(tuple(context.module.path), type(context.module).__name__,
                           context.method_name, leaf=not isinstance(context.module, nn.Sequential)))
        if stack:
            calls[stack[-1]].leaf = False
        stack.append(k)
        try:
            with jax.named_scope(f"{_MARK}{k}"):
                out = next_fun(*args, **kwargs)
        finally:
            stack.pop()
        calls[k].output = tuple(tuple(a.shape) for a in jax.tree.leaves(out)
                                if hasattr(a, "shape"))  # fmt: skip
        return out

    kwargs = _call_kwargs(model, False)
    with nn.intercept_methods(interceptor):
        closed = jax.make_jaxpr(lambda v, x: model.apply(v, x, **kwargs))(variables, x)
    return closed, calls


def _sub_jaxpr(eqn: Any) -> Jaxpr | None:
    """The body of a call-like equation (pjit, custom_jvp/vjp, checkpoint) whose inputs are
    the equation's inputs, or None."""
    for key in _CALL_PARAMS:
        sub = eqn.params.get(key)
        if isinstance(sub, ClosedJaxpr):
            return sub.jaxpr
        if isinstance(sub, Jaxpr):
            return sub
    return None


def _nested(eqn: Any) -> list[Jaxpr]:
    """Every jaxpr in an equation's params (cond branches, scan/while bodies, calls)."""
    out = []
    for value in eqn.params.values():
        for v in value if isinstance(value, tuple | list) else (value,):
            if isinstance(v, ClosedJaxpr):
                out.append(v.jaxpr)
            elif isinstance(v, Jaxpr):
                out.append(v)
    return out


def _is_heavy(jaxpr: Jaxpr) -> bool:
    """Whether a jaxpr holds an op that would start a row (anything but elementwise)."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in _OWN_ROW or any(_is_heavy(j) for j in _nested(eqn)):
            return True
    return False


def _call_name(eqn: Any) -> str:
    if "name" in eqn.params and isinstance(eqn.params["name"], str):
        return eqn.params["name"]
    for key in _CALL_PARAMS:
        sub = eqn.params.get(key)
        info = getattr(getattr(sub, "jaxpr", sub), "debug_info", None)
        src = getattr(info, "func_src_info", None) or ""
        if src:
            return src.split(" ")[0]
    return eqn.primitive.name


def _valid_taps(n_in: int, n_out: int, k: int, stride: int, pad: int, kd: int, ld: int) -> int:
    """(output position, kernel tap) pairs of one axis that land on an input value, not on
    padding or between the values of an input dilated by `ld` (XLA's convolution count)."""
    count = 0
    for o in range(n_out):
        for t in range(k):
            i = o * stride - pad + t * kd  # in the dilated input
            count += 0 <= i <= (n_in - 1) * ld and i % ld == 0
    return count


def _macs(eqn: Any, unpadded: bool = False) -> int:
    """Multiply-accumulates of one equation (convolutions and matrix products only); with
    `unpadded`, convolution taps on padding or input-dilation holes are skipped, as XLA's
    `cost_analysis` does."""
    name = eqn.primitive.name
    if name == "conv_general_dilated":
        lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
        out = eqn.outvars[0].aval.shape
        p = eqn.params
        dn = p["dimension_numbers"]
        kernel = [rhs[d] for d in dn.rhs_spec[2:]]
        channels = out[dn.out_spec[1]] * rhs[dn.rhs_spec[1]]  # out x in per group
        batch = out[dn.out_spec[0]]
        if unpadded:
            taps = math.prod(
                _valid_taps(lhs[a], out[b], k, s, pad[0], kd, ld)
                for a, b, k, s, pad, kd, ld in zip(
                    dn.lhs_spec[2:], dn.out_spec[2:], kernel, p["window_strides"], p["padding"],
                    p["rhs_dilation"], p["lhs_dilation"], strict=True,
                )
            )  # fmt: skip
        elif any(d > 1 for d in p["lhs_dilation"]):
            # A transposed conv multiplies each input value by the whole kernel once.
            taps = math.prod(lhs[d] for d in dn.lhs_spec[2:]) * math.prod(kernel)
        else:
            taps = math.prod(out[d] for d in dn.out_spec[2:]) * math.prod(kernel)
        return batch * channels * taps
    if name == "dot_general":
        lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
        (_, rc), (_, rb) = eqn.params["dimension_numbers"]
        return math.prod(lhs) * math.prod(rhs) // max(1, math.prod(rhs[d] for d in (*rc, *rb)))
    total = 0
    for sub in _nested(eqn):
        inner = sum(_macs(e, unpadded) for e in sub.eqns)
        if name == "scan":
            inner *= eqn.params.get("length", 1)
        total = max(total, inner) if name == "cond" else total + inner
    return total


def _window(sizes: Sequence[int], strides: Sequence[int]) -> str:
    k = "x".join(map(str, sizes))
    s = strides[0] if len(set(strides)) == 1 else "(" + ",".join(map(str, strides)) + ")"
    return f"{k}/{s}"


def _detail(eqn: Any) -> str:
    """"11x11/4"-style kernel/stride of a conv or pooling equation ("" otherwise)."""
    name = eqn.primitive.name
    if name == "conv_general_dilated":
        dn = eqn.params["dimension_numbers"]
        rhs = eqn.invars[1].aval.shape
        text = _window([rhs[d] for d in dn.rhs_spec[2:]], eqn.params["window_strides"])
        if any(d > 1 for d in eqn.params["lhs_dilation"]):
            text = _window([rhs[d] for d in dn.rhs_spec[2:]], eqn.params["lhs_dilation"])
        if any(d > 1 for d in eqn.params["rhs_dilation"]):
            text += f" dilation {max(eqn.params['rhs_dilation'])}"
        if eqn.params["feature_group_count"] > 1:
            text += f" groups {eqn.params['feature_group_count']}"
        return text
    if name in _POOLS:
        dims = eqn.params["window_dimensions"]
        spatial = [i for i, d in enumerate(dims) if d > 1 or eqn.params["window_strides"][i] > 1]
        return _window([dims[i] for i in spatial] or [1],
                       [eqn.params["window_strides"][i] for i in spatial] or [1])  # fmt: skip
    return ""


# ---------------------------------------------------------------------------------------
# Receptive fields: per activation var, (axis, size, jump, start) for H and W. `axis` is the
# array axis holding that spatial dimension, None once it has been reduced (the field then
# spans the whole input along it).

_Field = tuple[tuple[int | None, float, float, float], ...]


def _window_field(f: _Field, per_axis: dict[int, tuple[int, int, int, int, int]]) -> _Field:
    """A window of (kernel, stride, pad_low, kernel dilation, input dilation) per array axis:
    size += (k_eff - 1) * j', jump = j' * stride, start += ((k_eff - 1) / 2 - pad) * j',
    with j' = jump / input dilation (Araujo et al., 2019, "Computing Receptive Fields of
    Convolutional Neural Networks", Distill)."""
    out = []
    for axis, r, j, s in f:
        if axis is None or axis not in per_axis:
            out.append((axis, r, j, s))
            continue
        k, stride, pad, kd, ld = per_axis[axis]
        k_eff = kd * (k - 1) + 1
        jj = j / ld
        out.append((axis, r + (k_eff - 1) * jj, jj * stride, s + ((k_eff - 1) / 2 - pad) * jj))
    return tuple(out)


def _global_field(f: _Field, sizes: dict[int, int], remap: Callable[[int], int | None]
                  ) -> _Field:  # fmt: skip
    """Reduce the array axes in `sizes` (the field grows over all their positions) and move
    the others with `remap`."""
    out = []
    for axis, r, j, s in f:
        if axis is not None and axis in sizes:
            n = sizes[axis]
            out.append((None, r + (n - 1) * j, j, s + (n - 1) / 2 * j))
        else:
            out.append((None if axis is None else remap(axis), r, j, s))
    return tuple(out)


def _propagate_field(eqn: Any, fields: dict[int, _Field]) -> _Field:
    """The receptive field of an equation's output from its activation inputs' fields
    (keyed by input position)."""
    name = eqn.primitive.name
    src = max(fields, key=lambda i: sum(r for _, r, _, _ in fields[i]))  # the widest input
    f = fields[src]
    in_shape = tuple(eqn.invars[src].aval.shape)
    out_shape = tuple(eqn.outvars[0].aval.shape) if eqn.outvars else ()
    p = eqn.params
    if name == "conv_general_dilated":
        dn = p["dimension_numbers"]
        lhs_to_out = dict(zip(dn.lhs_spec[2:], dn.out_spec[2:], strict=True))
        rhs = eqn.invars[1].aval.shape
        per_axis = {
            a: (rhs[dn.rhs_spec[2 + i]], p["window_strides"][i], p["padding"][i][0],
                p["rhs_dilation"][i], p["lhs_dilation"][i])
            for i, a in enumerate(dn.lhs_spec[2:])
        }  # fmt: skip
        g = _window_field(f, per_axis)
        return tuple((None if a is None else lhs_to_out.get(a), r, j, s) for a, r, j, s in g)
    if name in _POOLS:
        per_axis = {a: (p["window_dimensions"][a], p["window_strides"][a], p["padding"][a][0],
                        p["window_dilation"][a], p["base_dilation"][a])
                    for a in range(len(in_shape))}  # fmt: skip
        return _window_field(f, per_axis)
    if name in _REDUCTIONS:
        axes = tuple(p["axes"]) if "axes" in p else (p["axis"],)
        return _global_field(f, {a: in_shape[a] for a in axes},
                             lambda a: a - sum(b < a for b in axes))  # fmt: skip
    if name == "pad":
        config = p["padding_config"]
        return tuple((a, r, j, s if a is None else s - config[a][0] * j) for a, r, j, s in f)
    if name == "slice":
        starts, strides = p["start_indices"], p["strides"] or (1,) * len(in_shape)
        return tuple((a, r, j, s) if a is None else (a, r, j * strides[a], s + starts[a] * j)
                     for a, r, j, s in f)  # fmt: skip
    if name == "transpose":
        perm = list(p["permutation"])
        return tuple((None if a is None else perm.index(a), r, j, s) for a, r, j, s in f)
    if name == "broadcast_in_dim":
        dims = p["broadcast_dimensions"]
        return tuple((None if a is None else dims[a], r, j, s) for a, r, j, s in f)
    if name == "dot_general":
        (lc, rc), (lb, rb) = p["dimension_numbers"]
        contract, batch = (lc, lb) if src == 0 else (rc, rb)
        free = [d for d in range(len(in_shape)) if d not in contract and d not in batch]
        lhs_rank = len(eqn.invars[0].aval.shape)
        offset = len(batch) + (0 if src == 0 else lhs_rank - len(lc) - len(lb))
        remap = lambda a: list(batch).index(a) if a in batch else offset + free.index(a)
        return _global_field(f, {a: in_shape[a] for a in contract}, remap)
    if len(out_shape) == len(in_shape) and (
        name != "reshape" or _keeps_spatial(in_shape, out_shape, f)
    ):
        return f
    # Any other change of rank (flatten, reshape): every spatial position is mixed in.
    return _global_field(f, {a: in_shape[a] for a, *_ in f if a is not None}, lambda a: None)


def _keeps_spatial(in_shape: tuple, out_shape: tuple, f: _Field) -> bool:
    last = max((a for a, *_ in f if a is not None), default=-1)
    return in_shape[: last + 1] == out_shape[: last + 1]


# ---------------------------------------------------------------------------------------
# The walk


class _Walker:
    """Assigns every equation of the traced jaxpr to a row (see the module docstring)."""

    def __init__(self, calls: list[_Call]):
        self.calls = calls
        self.rows: list[_Row] = []
        self.open: dict[Any, int] = {}  # row key -> row index, for module calls and scopes
        self.producer: dict[Any, int] = {}  # var -> row index
        self.field: dict[Any, _Field] = {}  # var -> receptive field (activations only)
        self.prev_key: Any = None

    def is_act(self, v: Any) -> bool:
        return not isinstance(v, Literal) and v in self.field

    def walk(self, jaxpr: Jaxpr, stack: str) -> None:
        for eqn in jaxpr.eqns:
            self.visit(eqn, f"{stack}/{eqn.source_info.name_stack}".strip("/"))

    def visit(self, eqn: Any, stack: str) -> None:
        acts = [v for v in eqn.invars if self.is_act(v)]
        sub = _sub_jaxpr(eqn)
        if sub is not None and (_is_heavy(sub) or not acts):
            for outer, inner in zip(eqn.invars, sub.invars, strict=False):
                self.alias(outer, inner)
            self.walk(sub, stack)
            for outer, inner in zip(eqn.outvars, sub.outvars, strict=False):
                self.alias(inner, outer)
            return
        parts = stack.split("/")
        marks = [i for i, c in enumerate(parts) if c.startswith(_MARK)]
        call = int(parts[marks[-1]][len(_MARK):]) if marks else None
        scope = tuple(parts[marks[-1] + 1:] if marks else parts)
        in_leaf = call is not None and self.calls[call].leaf
        if in_leaf:
            key = ("call", call)
        elif scope:
            key = ("scope", call, scope)
        else:
            key = None
        if key is not None and key != self.prev_key:
            self.open.pop(key, None)  # a scope entered again is a new row
        if acts:
            fields = {i: self.field[v] for i, v in enumerate(eqn.invars) if self.is_act(v)}
            for v in eqn.outvars:
                self.field[v] = _propagate_field(eqn, fields)
        if key is not None:
            row = self.open.get(key)
            if row is None:
                row = self.new_row(eqn, call, scope if not in_leaf else ())
                self.open[key] = row
            self.count(eqn, row)
            self.take(eqn, row)
            self.prev_key = key
            return
        self.prev_key = None
        if not acts:
            return
        name = eqn.primitive.name
        # Two operands from different rows (x + shortcut) make a layer; x * sigmoid(x) does not.
        sources = {self.producer.get(v) for v in acts}
        if name in _OWN_ROW or (name in _BINARY and len(sources) >= 2) or (
            sub is None and _nested(eqn)
        ):
            row = self.new_row(eqn, call, ())
            self.count(eqn, row)
            self.take(eqn, row)
            return
        self.fuse(eqn, acts, sub)

    def alias(self, src: Any, dst: Any) -> None:
        if self.is_act(src):
            self.field[dst] = self.field[src]
            if src in self.producer:
                self.producer[dst] = self.producer[src]

    def count(self, eqn: Any, row: int) -> None:
        self.rows[row].macs += _macs(eqn)
        self.rows[row].macs_unpadded += _macs(eqn, unpadded=True)

    def take(self, eqn: Any, row: int) -> None:
        for v in eqn.outvars:
            self.producer[v] = row
        if eqn.outvars:
            self.rows[row].last = eqn.outvars[0]

    def new_row(self, eqn: Any, call: int | None, scope: tuple) -> int:
        parent = self.calls[call].path if call is not None else ()
        if call is not None and self.calls[call].leaf:
            c = self.calls[call]
            method = "" if c.method == "__call__" else f".{c.method}"
            name = "/".join(c.path) + method
            detail = _detail(eqn)
            kind = c.type + (f" {detail}" if detail else "")
            shape = c.output[0] if c.output else tuple(eqn.outvars[0].aval.shape)
            row = _Row(name, kind, parent, shape, call=call)
        else:
            kind = "/".join(scope) if scope else self.op_kind(eqn)
            shape = tuple(eqn.outvars[0].aval.shape)
            view = not scope and eqn.primitive.name == "reshape"
            row = _Row("", kind, parent, shape, view=view)
        self.rows.append(row)
        return len(self.rows) - 1

    def op_kind(self, eqn: Any) -> str:
        name = eqn.primitive.name
        shape = eqn.invars[0].aval.shape
        if name in _POOLS:
            return f"{_POOL_NAMES[name]} {_detail(eqn)}"
        if name in _REDUCTIONS:
            axes = tuple(eqn.params.get("axes", ()))
            if len(shape) == 4 and axes == (1, 2):
                pool = {"reduce_sum": "sum_pool", "reduce_max": "max_pool"}.get(name, name)
                return f"global_{pool}"
            return name
        if name == "reshape":
            out = eqn.outvars[0].aval.shape
            return "flatten" if len(out) == 2 and len(shape) > 2 else "reshape"
        if name == "conv_general_dilated":
            return f"conv {_detail(eqn)}"
        return {"concatenate": "concat", "dot_general": "matmul"}.get(name, name)

    def fuse(self, eqn: Any, acts: list, sub: Any) -> None:
        """An elementwise (or layout) op on one activation joins its producer's row."""
        row_index = self.producer.get(acts[0])
        if row_index is None:
            return
        row = self.rows[row_index]
        name = _call_name(eqn) if sub is not None else eqn.primitive.name
        if name == "max" and any(isinstance(v, Literal) and v.val == 0 for v in eqn.invars):
            name = "relu"
        if name == "div" and acts[0] is row.last and row.kind.startswith(("sum_pool",
                                                                            "global_sum")):
            row.kind = row.kind.replace("sum", "avg", 1)
        elif name == "div" and acts[0] is row.last and row.kind == "reduce_sum":
            row.kind = "mean"
        elif name not in _PLAIN:
            name = _FRIENDLY.get(name, name)
            if not row.fused or row.fused[-1] != name:
                row.fused.append(name)
        if any(v is row.last for v in acts) and eqn.outvars:
            row.last = eqn.outvars[0]
        for v in eqn.outvars:
            self.producer[v] = row_index


def _compute_dtype(model: nn.Module) -> np.dtype:
    dtype = getattr(model, "dtype", None)
    return np.dtype(dtype) if dtype is not None else np.dtype(np.float32)


def _residual_bytes(model: nn.Module, variables: dict, x: jax.ShapeDtypeStruct) -> int:
    """Bytes of the residuals `jax.vjp` saves in a train-mode forward of `x`."""
    kwargs = _call_kwargs(model, True)
    others = {k: v for k, v in variables.items() if k != "params"}

    def forward(params: Any, others: dict, x: jax.Array) -> Any:
        out, _ = model.apply({"params": params, **others}, x, **kwargs,
                             rngs={"dropout": jax.random.key(0)},
                             mutable=[k for k in others])  # fmt: skip
        return out

    residuals = jax.eval_shape(
        lambda p, o, x: jax.vjp(lambda p, x: forward(p, o, x), p, x)[1],
        variables.get("params", {}), others, x,
    )
    return sum(leaf.size * np.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(residuals))


def _variable_rows(variables: dict, rows: list[_Row], calls: list[_Call]
                   ) -> tuple[dict[int, list[int]], list[tuple[str, list[int]]]]:  # fmt: skip
    """Attribute every variable to the first row of the module holding it: {row: [params,
    state, weights]} and, for variables no row used (GoogLeNet's aux heads in eval),
    (module, [params, state, weights]) per unused module."""
    owned: dict[int, list[int]] = {}
    unused: dict[tuple[str, ...], list[int]] = {}
    first_leaf: dict[tuple[str, ...], int] = {}
    for i, row in enumerate(rows):
        if row.call is not None:
            first_leaf.setdefault(calls[row.call].path, i)
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
        keys = [getattr(k, "key", getattr(k, "name", str(k))) for k in path]
        collection, module = keys[0], tuple(keys[1:-1])
        slots = (0, 2) if collection == "params" and keys[-1] != "bias" else (
            (0,) if collection == "params" else (1,))
        row = first_leaf.get(module)
        if row is None:  # a module's own variables: its first row
            row = next((i for i, r in enumerate(rows[1:], 1) if r.path[: len(module)] == module),
                       None)  # fmt: skip
        if row is None:
            cut = next((n for n in range(1, len(module) + 1)
                        if not any(r.path[:n] == module[:n] for r in rows[1:])), len(module))
            counts = unused.setdefault(module[:cut], [0, 0, 0])
        else:
            counts = owned.setdefault(row, [0, 0, 0])
        for slot in slots:
            counts[slot] += int(leaf.size)
    return owned, [("/".join(m), counts) for m, counts in unused.items()]


def summary(
    model: nn.Module | str | Sequence[Any],
    input_shape: Sequence[int] | None = None,
    batch_size: int = 1,
    *,
    training: bool = True,
) -> Summary:
    """Per-layer output shapes, parameters, activation memory and MACs of `model` on a
    (batch_size, *input_shape) float32 batch, with totals; `print()` it for the table.

    `model` is a flax module, a registered name (default input shape from the registry) or a
    list of layers (run as `nn.Sequential`). `training=False` skips the train-mode trace that
    measures the backward pass's saved activations. Nothing is computed: the model is traced
    with abstract arrays. See the module docstring for the conventions."""
    module, label, shape = _resolve(model, input_shape)
    if batch_size < 1:
        raise InputError(f"summary: batch_size must be >= 1, got {batch_size}.")
    x = jax.ShapeDtypeStruct((batch_size, *shape), jnp.float32)
    variables = _abstract(module, x)
    closed, calls = _trace(module, variables, x)
    walker = _Walker(calls)
    x_var = closed.jaxpr.invars[-1]
    walker.rows.append(_Row("input", "input", (), x.shape, last=x_var))
    walker.producer[x_var] = 0
    spatial = (1, 2) if len(x.shape) == 4 else ()
    walker.field[x_var] = tuple((a, 1.0, 1.0, 0.5) for a in spatial)
    walker.walk(closed.jaxpr, "")

    itemsize = _compute_dtype(module).itemsize
    owned, unused = _variable_rows(variables, walker.rows, calls)
    rows = []
    for i, r in enumerate(walker.rows):
        values = 0 if r.view else math.prod(r.shape)
        field = walker.field.get(r.last, ())
        p, s, w = owned.get(i, (0, 0, 0))
        name = r.name or "/".join((*r.path, r.kind.split(" ")[0]))
        rows.append(LayerRow(
            index=i, name=name, kind=r.kind, output_shape=tuple(r.shape), params=p, weights=w,
            state=s,
            activations=values, activation_bytes=values * itemsize, macs=r.macs,
            macs_unpadded=r.macs_unpadded,
            fused=tuple(r.fused),
            receptive_field=tuple(_num(v[1]) for v in field) or None,
            jump=tuple(_num(v[2]) for v in field) or None,
            start=tuple(_num(v[3]) for v in field) or None,
        ))  # fmt: skip
    for name, (p, s, w) in unused:
        rows.append(LayerRow(len(rows), name, "(not run in this pass)", (), p, w, s, 0, 0, 0, 0))
    param_leaves = jax.tree.leaves(variables.get("params", {}))
    training_bytes = None
    if training:
        one, two = (_residual_bytes(module, variables, jax.ShapeDtypeStruct((n, *shape), x.dtype))
                    for n in (1, 2))
        training_bytes = two - one
    return Summary(
        model=label,
        rows=tuple(rows),
        input_shape=tuple(x.shape),
        dtype=str(_compute_dtype(module)),
        params=sum(r.params for r in rows),
        param_bytes=sum(v.size * np.dtype(v.dtype).itemsize for v in param_leaves),
        state=sum(r.state for r in rows),
        macs=sum(r.macs for r in rows),
        macs_unpadded=sum(r.macs_unpadded for r in rows),
        activations=sum(r.activations for r in rows),
        activation_bytes=sum(r.activation_bytes for r in rows),
        training_bytes_per_image=training_bytes,
    )


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else float(v)


@dataclasses.dataclass(frozen=True)
class ReceptiveFields(_Rows):
    """Per-layer receptive fields: `rows` are the summary's rows; `str()` gives the table."""

    model: str
    rows: tuple[LayerRow, ...]

    def __str__(self) -> str:
        pair = lambda v: "x".join(f"{x:g}" for x in v) if v else "-"
        head = ("#", "layer", "type", "output", "receptive field", "jump", "start")
        lines = [head] + [
            (str(r.index), r.name, r.label, "x".join(map(str, r.output_shape[1:])),
             pair(r.receptive_field), pair(r.jump), pair(r.start))
            for r in self.rows
        ]  # fmt: skip
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                         for line in lines)  # fmt: skip


def receptive_field(
    model_or_layers: nn.Module | str | Sequence[Any], input_shape: Sequence[int] | None = None
) -> ReceptiveFields:
    """Receptive field (extent in input pixels), jump (input pixels between neighbouring
    outputs) and start (centre of the first output's field; input pixel i spans [i, i+1))
    after every layer of a model, a registered name, or a list of layers (flax modules or
    functions, run as `nn.Sequential`). Per layer with kernel k, dilation d, stride s and
    padding p: r += (d (k - 1)) j, start += (d (k - 1) / 2 - p) j, j *= s; branches take the
    widest field, and a global pool or flatten covers its whole input."""
    s = summary(model_or_layers, input_shape, training=False)
    rows = tuple(r for r in s.rows if r.receptive_field is not None)
    return ReceptiveFields(s.model, rows)
