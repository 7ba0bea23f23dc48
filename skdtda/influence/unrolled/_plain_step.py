"""The hand-written gradient and Hessian-vector step of a plain MLP.

Replays of ``Linear -> activation -> ... -> Linear`` stacks take this step
instead of ``vmap(jvp(grad))`` (same numbers, several times faster on small
nets); :class:`~skdtda.influence.unrolled._replay._Replay` falls back to
``torch.func`` for every other module.
"""

import math

import numpy as np
import torch

from ...model import plain_stack

# sigma'(z) and sigma''(z) of the activations the hand-written step knows, from
# the activation's output h.
_ACTIVATION_DERIVATIVES = {
    torch.nn.Identity: None,
    torch.nn.ReLU: "relu",
    torch.nn.Tanh: (lambda h: 1 - h * h, lambda h: -2 * h * (1 - h * h)),
    torch.nn.Sigmoid: (lambda h: h * (1 - h), lambda h: h * (1 - h) * (1 - 2 * h)),
}


class _PlainStackStep:
    """Gradient and batched Hessian-vector products of a plain MLP, by hand.

    For ``Linear -> activation -> ... -> Linear`` with Identity/ReLU/Tanh/Sigmoid
    and a cross-entropy or squared-error loss, the forward-over-reverse
    products that ``vmap(jvp(grad))`` forms are written out as matrix products
    over the tangents. ``torch.func`` spends several milliseconds of Python per
    step re-tracing the transforms; on small nets that is most of the replay.

    Forward tangent: ``z' = h'_{l-1} W^T + h_{l-1} W'^T + b'``, ``h' = s'(z) z'``.
    Output: ``e = c * dl/dz`` with ``c_n = (1 + w_n) / B``,
    ``e' = c' * dl/dz + c * (d2l/dz2) z'``. Backward tangent:
    ``gW' = e'^T h + e^T h'``, ``gb' = sum e'``, ``d' = e' W + e W'``,
    ``e'_{l-1} = d' s'(z) + d s''(z) z'``.

    The parameters travel as one block per parameter tensor, and the tangents
    in layouts that make every product over the ``K`` tangents one 2-D matrix
    product: a weight's tangent is ``(out, K, in)``, a bias's ``(out, K)``, an
    activation's ``(features, K, batch)``. Four of the six products per layer
    read and write these layouts as they are; ``e^T h'`` and ``e W'`` need one
    copy each that swaps the two outer axes (a full transpose would cost 20x
    more at 64 x 64 x 64). A weight's own block is
    ``(out, 1, in)`` (a bias's ``(out, 1)``) so that it broadcasts against its
    tangents in the optimizer's arithmetic.
    """

    @staticmethod
    def layers_of(net, y):
        layers = plain_stack(net.module_)
        criterion = net.criterion_
        if layers is None:
            return None
        if type(criterion) is torch.nn.CrossEntropyLoss:
            if criterion.label_smoothing != 0 or y.ndim != 1:
                return None
        elif type(criterion) is not torch.nn.MSELoss:
            return None
        linears = []
        for layer in layers:
            if type(layer) is torch.nn.Linear:
                linears.append([layer, None])
            elif type(layer) is torch.nn.Dropout:  # p == 0, an identity
                continue
            elif type(layer) in _ACTIVATION_DERIVATIVES and linears and linears[-1][1] is None:
                linears[-1][1] = type(layer)
            else:
                return None
        if not linears or linears[-1][1] is not None:
            return None
        return linears

    def __init__(self, member, linears):
        ids = {id(p): i for i, (_, p) in enumerate(member.module.named_parameters())}
        offsets = np.concatenate([[0], np.cumsum(member.sizes)])
        self.layers = []
        for layer, act in linears:
            w = ids[id(layer.weight)]
            b = None if layer.bias is None else ids[id(layer.bias)]
            self.layers.append((w, b, act, tuple(layer.weight.shape)))
        self.slices = [slice(int(offsets[i]), int(offsets[i + 1]))
                       for i in range(len(member.sizes))]
        # The block shape of each parameter: (out, in) for a weight, (out,) for a bias.
        self.shapes = [None] * len(self.slices)
        for w, b, _, shape in self.layers:
            self.shapes[w] = shape
            if b is not None:
                self.shapes[b] = shape[:1]
        self.cross_entropy = type(member.net.criterion_) is torch.nn.CrossEntropyLoss

    def split(self, theta):
        """Flat parameters (P,) -> blocks of shape (out, 1, in) and (out, 1)."""
        return [theta[s].reshape(shape[0], 1, *shape[1:]).clone()
                for s, shape in zip(self.slices, self.shapes)]

    def split_tangent(self, tangent):
        """Flat tangents (K, P) -> blocks of shape (out, K, in) and (out, K)."""
        K = len(tangent)
        return [tangent[:, s].reshape(K, *shape).transpose(0, 1).contiguous()
                for s, shape in zip(self.slices, self.shapes)]

    @staticmethod
    def join(blocks):
        return torch.cat([block.reshape(-1) for block in blocks])

    @staticmethod
    def join_tangent(blocks):
        K = blocks[0].shape[1]
        # per tangent, out x in numbers (out for a bias); explicit, as K may be 0
        return torch.cat([block.transpose(0, 1).reshape(K, math.prod(block.shape[:1]
                                                                     + block.shape[2:]))
                          for block in blocks], dim=1)

    def gradient(self, theta, x, y):
        """Gradient blocks of the minibatch mean loss alone (no tangents)."""
        h, hs = x, [x]
        for w, b, act, (o, i) in self.layers:
            z = h @ theta[w].view(o, i).T
            if b is not None:
                z = z + theta[b].view(o)
            if act is None or act is torch.nn.Identity:
                h = z
            elif act is torch.nn.ReLU:
                h = z.clamp_min(0)
            else:
                h = act()(z)
            hs.append(h)
        out, B = hs[-1], len(x)
        if self.cross_entropy:
            e = torch.softmax(out, dim=-1)
            e[torch.arange(B), y] -= 1
        else:
            e = (2 / out.shape[1]) * (out - y.reshape(out.shape))
        e = e / B
        grad = [None] * len(theta)
        for layer in range(len(self.layers) - 1, -1, -1):
            w, b, _, (o, i) = self.layers[layer]
            grad[w] = (e.T @ hs[layer]).view(o, 1, i)
            if b is not None:
                grad[b] = e.sum(0).view(o, 1)
            if layer == 0:
                break
            d = e @ theta[w].view(o, i)
            act, h_prev = self.layers[layer - 1][2], hs[layer]
            if act is None or act is torch.nn.Identity:
                e = d
            elif act is torch.nn.ReLU:
                e = d * (h_prev > 0).to(d.dtype)
            else:
                e = d * _ACTIVATION_DERIVATIVES[act][0](h_prev)
        return grad

    def __call__(self, theta, tangent, x, y, w_dot, row_derivatives=False, workspace=None):
        """Gradient blocks and their tangent blocks (and, if asked, dl_n along each tangent).

        ``theta`` and ``tangent`` are block lists (see :meth:`split`); ``w_dot``
        of shape (K, B) is the tangent of the rows' loss weights. With
        ``row_derivatives`` a third output (K, B) holds each row's loss
        derivative along each tangent (the per-row dot products
        ``grad l_n^T t_k``).

        ``workspace``, a dict owned by one replay, keeps the tangent-sized
        buffers from step to step: allocating them afresh (~10 MB a step at
        64 tangents on the benchmark MLP) costs page faults each time the
        allocator hands freed memory back to the system, about a quarter of
        the step. The returned tangent blocks then live in it until the next
        call.
        """
        K, B = w_dot.shape

        def buffer(key, *shape):
            if workspace is None:
                return torch.empty(shape, dtype=x.dtype, device=x.device)
            held = workspace.get(key)
            if held is None or held.shape != shape:
                held = workspace[key] = torch.empty(shape, dtype=x.dtype, device=x.device)
            return held

        # Per-row factors (B, features) broadcast over the tangents as contiguous
        # (features, 1, B) blocks: a transposed view would make the inner stride
        # of the elementwise products non-unit, 8x slower.
        h, h_dot = x, None
        hs, hs_dot, zs_dot = [x], [None], [None]
        for w, b, act, (o, i) in self.layers:
            W, W_dot = theta[w].view(o, i), tangent[w]
            z = h @ W.T
            z_dot = buffer(("z", w), o, K, B)
            if h_dot is None:
                torch.mm(W_dot.view(o * K, i), h.T, out=z_dot.view(o * K, B))
            else:
                torch.mm(W, h_dot.view(i, K * B), out=z_dot.view(o, K * B))
                z_dot.view(o * K, B).addmm_(W_dot.view(o * K, i), h.T)
            if b is not None:
                z = z + theta[b].view(o)
                z_dot.add_(tangent[b].unsqueeze(-1))
            if act is None or act is torch.nn.Identity:
                h, h_dot = z, z_dot
                zs_dot.append(None)
            elif act is torch.nn.ReLU:
                h = z.clamp_min(0)
                h_dot = z_dot.mul_((z > 0).to(z.dtype).T.unsqueeze(1).contiguous())
                zs_dot.append(None)
            else:
                h = act()(z)
                h_dot = torch.mul(z_dot,
                                  _ACTIVATION_DERIVATIVES[act][0](h).T.unsqueeze(1).contiguous(),
                                  out=buffer(("h", w), o, K, B))
                zs_dot.append(z_dot)
            hs.append(h)
            hs_dot.append(h_dot)
        out, out_dot = hs[-1], hs_dot[-1]
        if self.cross_entropy:
            p = torch.softmax(out, dim=-1)
            dl = p.clone()
            dl[torch.arange(B), y] -= 1
            p_t = p.T.unsqueeze(1).contiguous()
            hess_dot = (out_dot - (p_t * out_dot).sum(0, keepdim=True)).mul_(p_t)
        else:
            scale = 2 / out.shape[1]
            dl = scale * (out - y.reshape(out.shape))
            hess_dot = scale * out_dot
        dl_t = dl.T.unsqueeze(1).contiguous()
        rows = (dl_t * out_dot).sum(0) if row_derivatives else None
        e = dl / B
        e_dot = hess_dot.addcmul_(dl_t, w_dot.unsqueeze(0)).div_(B)
        grad, grad_dot = [None] * len(theta), [None] * len(theta)
        for layer in range(len(self.layers) - 1, -1, -1):
            w, b, _, (o, i) = self.layers[layer]
            h_in, h_in_dot = hs[layer], hs_dot[layer]
            grad[w] = (e.T @ h_in).view(o, 1, i)
            g_dot = buffer(("g", w), o, K, i)
            torch.mm(e_dot.view(o * K, B), h_in, out=g_dot.view(o * K, i))
            if h_in_dot is not None:
                # h' (in, K, B) -> (K, in, B) swaps the outer axes only (a cheap copy)
                swapped = buffer(("swap", w), K, i, B).copy_(h_in_dot.transpose(0, 1))
                g_dot.view(o, K * i).addmm_(e.T, swapped.view(K * i, B).T)
            grad_dot[w] = g_dot
            if b is not None:
                grad[b] = e.sum(0).view(o, 1)
                grad_dot[b] = e_dot.sum(-1)
            if layer == 0:
                break
            W, W_dot = theta[w].view(o, i), tangent[w]
            d = e @ W
            d_dot = buffer(("d", w), i, K, B)
            torch.mm(W.T, e_dot.view(o, K * B), out=d_dot.view(i, K * B))
            # W'^T e^T comes out (K, in, B); adding it swaps the outer axes only
            # (the swap buffer's first use, e^T h' above, is done with)
            product = torch.mm(W_dot.view(o, K * i).T, e.T,
                               out=buffer(("swap", w), K, i, B).view(K * i, B))
            d_dot.add_(product.view(K, i, B).transpose(0, 1))
            act, h_prev = self.layers[layer - 1][2], hs[layer]
            if act is None or act is torch.nn.Identity:
                e, e_dot = d, d_dot
            elif act is torch.nn.ReLU:
                mask = (h_prev > 0).to(d.dtype)
                e, e_dot = d * mask, d_dot.mul_(mask.T.unsqueeze(1).contiguous())
            else:
                first, second = _ACTIVATION_DERIVATIVES[act]
                e = d * first(h_prev)
                e_dot = d_dot.mul_(first(h_prev).T.unsqueeze(1).contiguous()).addcmul_(
                    (d * second(h_prev)).T.unsqueeze(1).contiguous(), zs_dot[layer])
        return (grad, grad_dot, rows) if row_derivatives else (grad, grad_dot)
