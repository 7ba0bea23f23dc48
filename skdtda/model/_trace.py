"""Layer inputs and output gradients of any module, captured by forward hooks.

Kronecker-factored curvature and the factored scoring need, for every
attributed layer, its per-row patches ``a`` and the gradients ``g`` of some
per-row value with respect to the layer's outputs. Both come from one pass of
the module itself: forward hooks record each call's patches and keep its
output tensor; one backward pass of the summed per-row values gives every
row's output gradients, because in evaluation mode (BatchNorm on running
statistics, Dropout off) row ``n``'s value depends on row ``n`` only.

Where a layer's input keeps its rows (axis 0 for a batch-first module, axis 1
for a sequence-first ``nn.TransformerEncoderLayer``) is found once per member
by running two batches of different sizes and seeing which axis follows.
"""

import contextlib

import numpy as np
import torch

from .._inputs import module_call, n_rows

__all__ = ["AUTO_EXACT_COLUMNS", "LayerTracer", "evaluating"]

_PROBE_SIZES = (3, 7)
#: samples="auto": every root column up to this many outputs, else one random
#: combination. One combination agreed with the exact GGN's scores within 0.015 of
#: all columns (Spearman, 3 problems, docs/architectures.md) at 1/n_outputs the passes.
#: (``curvature="auto"`` takes every column further where it is cheap:
#: :data:`skdtda.curvature.AUTO_ALL_COLUMNS`.)
AUTO_EXACT_COLUMNS = 2


@contextlib.contextmanager
def evaluating(module):
    """Run ``module`` in evaluation mode, restoring each submodule's mode after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


class LayerTracer:
    """Hooks on the attributed layers of one member.

    Parameters
    ----------
    member : FunctionalMember
    specs : list of LayerSpec
    X : tensor
        A few training rows, for finding each layer's row axis.
    """

    def __init__(self, member, specs, X):
        self.member, self.specs = member, specs
        self.fixed = {}
        self._probe(X)

    def _calls(self, X, keep_outputs):
        """Run the module on ``X``; per spec, the list of (args, kwargs, output)."""
        calls = [[] for _ in self.specs]

        def hook_for(i):
            def hook(module, args, kwargs, output):
                if keep_outputs and not output.requires_grad:
                    output = output.detach().requires_grad_()  # frozen weights
                args = tuple(a.detach() if torch.is_tensor(a) else a for a in args)
                calls[i].append((args, kwargs, output))
                return output
            return hook

        handles = [spec.module.register_forward_hook(hook_for(i), with_kwargs=True)
                   for i, spec in enumerate(self.specs)]
        try:
            with evaluating(self.member.module), torch.set_grad_enabled(keep_outputs):
                outputs = module_call(lambda args, kwargs: self.member.module(*args, **kwargs),
                                      X)
        finally:
            for h in handles:
                h.remove()
        return outputs, calls

    def _probe(self, X):
        shapes = []
        for n in _PROBE_SIZES:
            rows = X[np.resize(np.arange(n_rows(X)), n)]
            _, calls = self._calls(rows, keep_outputs=False)
            shapes.append([[tuple(out.shape) for _, _, out in c] for c in calls])
        kept = []
        for i, spec in enumerate(self.specs):
            first, second = shapes[0][i], shapes[1][i]
            axes, reason = [], None
            if not first:
                reason = "never called by the module's forward"
            elif len(first) != len(second):
                reason = "called a different number of times for other batch sizes"
            else:
                for s1, s2 in zip(first, second):
                    found = [ax for ax in range(min(len(s1), len(s2)))
                             if (s1[ax], s2[ax]) == _PROBE_SIZES]
                    same = len(s1) == len(s2) and all(
                        a == b for ax, (a, b) in enumerate(zip(s1, s2)) if ax not in found)
                    if len(found) != 1 or not same:
                        reason = ("its output has no single axis that follows the number of "
                                  f"rows (shapes {s1} and {s2} for {_PROBE_SIZES} rows)")
                        break
                    axes.append(found[0])
            if reason is None:
                spec.batch_axes = axes
                # patches a row, over every call: what a row's products through the layer
                # cost (its output has the row axis, the out axis and these positions)
                spec.positions = sum(int(np.prod(s)) for s in first) // (
                    _PROBE_SIZES[0] * spec.shape[0])
                kept.append(spec)
            else:
                for name in spec.param_names:
                    self.fixed[name] = reason
        self.specs = kept
        self._check_gradients(X[np.resize(np.arange(n_rows(X)), _PROBE_SIZES[0])])

    def _check_gradients(self, X):
        """Hold fixed every layer whose hooked gradient is not its parameters' whole
        gradient: a parameter tied to another module's (``b.weight = a.weight``) or
        read outside the layer's own forward (``h @ self.embed.weight.T``) gets part
        of its gradient elsewhere, and factors of the layer's calls alone would miss
        it. Checked once, against autograd, on a random combination of the outputs."""
        if not self.specs:
            return
        params = [p for spec in self.specs for _, p in spec.kind.parameters(spec.module)]
        frozen = [p for p in params if not p.requires_grad]
        for p in frozen:
            p.requires_grad_(True)
        try:
            with torch.enable_grad():
                outputs, calls = self._calls(X, keep_outputs=True)
                weights = torch.randn(outputs.shape, generator=torch.Generator().manual_seed(0),
                                      dtype=outputs.dtype).to(outputs.device)
                zs = [out for c in calls for _, _, out in c]
                grads = torch.autograd.grad((outputs * weights).sum(), zs + params,
                                            allow_unused=True)
        finally:
            for p in frozen:
                p.requires_grad_(False)
        hooked = self._output_grads(calls, grads[:len(zs)])
        whole = iter(grads[len(zs):])
        kept = []
        for spec, patches, g in zip(self.specs, self._patches(calls), hooked):
            block = patches.row_grads(g).sum(dim=0, keepdim=True)
            parts = [part[0] for part in spec.kind.to_params(spec.module, block)]
            # None: the parameter does not reach the outputs (nor does the layer)
            truth = [torch.zeros_like(part) if t is None else t
                     for t, part in zip((next(whole) for _ in parts), parts)]
            scale = max(max(float(t.abs().max()) for t in truth), 1e-30)
            if all(float((t - part).abs().max()) <= 1e-3 * scale
                   for t, part in zip(truth, parts)):
                kept.append(spec)
                continue
            for name in spec.param_names:
                self.fixed[name] = (
                    "its parameters also act outside its own calls (tied to another "
                    "module's, or read directly in a forward), so its factors would miss "
                    "part of their gradient")
        self.specs = kept

    def row_macs(self):
        """Multiply-adds of one row's product through every traced layer
        (``positions * d_in * d_out`` summed; one-hot inputs, as an embedding's,
        count one): the cost of one backward pass's layer products, a row
        (:func:`skdtda.curvature.auto_options` has an example)."""
        return sum(spec.positions * spec.shape[0] * (1 if spec.kind.diagonal_input
                                                     else spec.shape[1])
                   for spec in self.specs)

    def _patches(self, calls):
        out = []
        for spec, spec_calls in zip(self.specs, calls):
            parts = [spec.kind.patches(spec.module, args, kwargs, ax)
                     for (args, kwargs, _), ax in zip(spec_calls, spec.batch_axes)]
            patches = parts[0]
            for p in parts[1:]:
                patches = patches.concat(p)
            out.append(patches)
        return out

    def _output_grads(self, calls, grads):
        """Per spec, (n, T, out) output gradients, calls concatenated along T."""
        out, k = [], 0
        for spec, spec_calls in zip(self.specs, calls):
            parts = []
            for (_, _, output), ax in zip(spec_calls, spec.batch_axes):
                g = grads[k] if grads[k] is not None else torch.zeros_like(output)
                parts.append(spec.kind.output_grads(spec.module, g.detach(), ax))
                k += 1
            out.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))
        return out

    def row_patches(self, fn, X, y):
        """Per layer, the patches and the output gradients of ``fn(net, outputs, y)``
        row by row: ``(patches, [g (n, T, out)])``, the factors of every row's
        gradient block ``sum_t g_nt a_nt^T``."""
        with torch.enable_grad():
            outputs, calls = self._calls(X, keep_outputs=True)
            values = fn(self.member.net, outputs, y)
            zs = [out for c in calls for _, _, out in c]
            grads = torch.autograd.grad(values.sum(), zs, allow_unused=True)
        return self._patches(calls), self._output_grads(calls, grads)

    def row_grads(self, fn, X, y):
        """Per-row gradient blocks of ``fn(net, outputs, y)``: per layer (n, out, in)."""
        patches, gs = self.row_patches(fn, X, y)
        return [p.row_grads(g) for p, g in zip(patches, gs)]

    def pseudo_grads(self, X, y, samples=None, generator=None):
        """Patches, and per column ``c`` of each row's output-Hessian root the
        back-propagated output gradients: ``(patches, iterator of [g per layer])``.

        ``sum_c g_c g_c^T`` over the columns rebuilds the GGN's output Hessian.
        With ``samples=k``, the columns are ``k`` random combinations
        ``R eps / sqrt(k)`` (Rademacher ``eps``), whose outer products match
        ``R R^T`` in expectation at ``k`` instead of ``n_outputs`` backward
        passes (for softmax cross-entropy this is the sampled Fisher up to the
        distribution of the combination).
        """
        member = self.member
        with torch.enable_grad():
            outputs, calls = self._calls(X, keep_outputs=True)
        patches = self._patches(calls)
        zs = [out for c in calls for _, _, out in c]
        flat = outputs.reshape(len(outputs), -1)
        root = member.output_hessian_roots(outputs.detach(), y).to(flat.dtype)
        if samples == "auto":
            samples = None if root.shape[2] <= AUTO_EXACT_COLUMNS else 1
        if samples is not None:
            signs = torch.randint(0, 2, (root.shape[0], root.shape[2], samples),
                                  generator=generator, device="cpu")
            eps = (2 * signs - 1).to(root.dtype).to(root.device) / samples ** 0.5
            root = torch.bmm(root, eps)

        def columns():
            for c in range(root.shape[2]):
                grads = torch.autograd.grad(flat, zs, grad_outputs=root[:, :, c],
                                              retain_graph=c + 1 < root.shape[2],
                                              allow_unused=True)
                yield self._output_grads(calls, grads)
        return patches, columns()
