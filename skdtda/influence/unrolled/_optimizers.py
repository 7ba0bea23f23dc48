"""The optimizers' updates, their forward-mode derivatives and their adjoints.

torch.optim's SGD (momentum, dampening, nesterov, weight decay), Adam and AdamW
written out so that a batch of tangents (``d theta / d eps``) follows each
update in forward mode, and a batch of cotangents goes back through it in
reverse mode (:meth:`skdtda.influence.unrolled._replay._Replay.adjoint`).
"""

import torch

_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


def _optimizer_settings(net):
    """The optimizer's hyper-parameters as the instantiated optimizer holds them.

    Reading ``net.optimizer_`` rather than the skorch parameters picks up the
    optimizer's own defaults (AdamW's ``weight_decay=0.01``).
    """
    optimizer = net.optimizer_
    if type(optimizer) not in _OPTIMIZERS:
        names = ", ".join(o.__name__ for o in _OPTIMIZERS)
        raise ValueError(f"UnrolledInfluence differentiates through {names}; the net's "
                         f"optimizer is {type(optimizer).__name__}")
    if len(optimizer.param_groups) != 1:
        raise ValueError("UnrolledInfluence needs a single optimizer parameter group, got "
                         f"{len(optimizer.param_groups)} (optimizer__param_groups)")
    group = dict(optimizer.param_groups[0])
    if group.get("maximize"):
        raise ValueError("optimizer__maximize=True is not supported by UnrolledInfluence")
    if group.get("amsgrad"):
        raise ValueError("optimizer__amsgrad=True is not supported by UnrolledInfluence: "
                         "the running maximum has no derivative where it switches")
    if torch.is_tensor(group["lr"]):
        group["lr"] = float(group["lr"])
    group["kind"] = type(optimizer).__name__
    return group


def _sgd(theta, tangent, g, g_dot, state, state_dot, opt, step):
    """torch.optim.SGD's update and its derivative (momentum, dampening, nesterov).

    The parameters follow torch.optim's arithmetic out of place; the tangents,
    ``K`` times bigger, are updated in place (``g_dot`` is consumed). ``theta``
    broadcasts against ``tangent`` (shapes ``(P,)`` and ``(K, P)``, or blocks).
    """
    lr, wd, mu = opt["lr"], opt["weight_decay"], opt["momentum"]
    d, d_dot = g, g_dot
    if wd:
        d = d + wd * theta
        d_dot.add_(tangent, alpha=wd)
    if mu:
        if step == 1:
            # a copy: d_dot may be a buffer the next step's gradient overwrites
            buf, buf_dot = d.clone(), d_dot.clone()
        else:
            damp = 1 - opt["dampening"]
            buf = mu * state["buf"] + damp * d
            buf_dot = state_dot["buf"]
            if damp == 1:  # one pass: buf' = d' + mu buf'
                torch.add(d_dot, buf_dot, alpha=mu, out=buf_dot)
            else:
                buf_dot.mul_(mu).add_(d_dot, alpha=damp)
        state["buf"], state_dot["buf"] = buf, buf_dot
        if opt["nesterov"]:
            d = d + mu * buf
            d_dot.add_(buf_dot, alpha=mu)
        else:
            d, d_dot = buf, buf_dot
    return theta - lr * d, tangent.add_(d_dot, alpha=-lr)


def _adam_quantities(g, state, opt, step):
    """Adam's moments after the step and the parts of its update, shared by both modes.

    ``g`` is the gradient with any coupled weight decay added; ``state`` the
    moments before the step (empty at step 1, where they are zero).
    """
    beta1, beta2 = opt["betas"]
    m = beta1 * state["m"] + (1 - beta1) * g if step > 1 else (1 - beta1) * g
    v = beta2 * state["v"] + (1 - beta2) * g * g if step > 1 else (1 - beta2) * g * g
    root2 = (1 - beta2 ** step) ** 0.5
    root = v.sqrt()
    denom = root / root2 + opt["eps"]
    # d sqrt(v) = dv / (2 sqrt(v)). v == 0 only where every gradient so far was
    # exactly 0 (a dead unit), whose derivatives are 0 too: 0/0 must not spread NaN.
    half_inverse_root = torch.where(
        root > 0, 0.5 / root.clamp_min(torch.finfo(v.dtype).tiny), torch.zeros_like(root))
    return m, v, root2, denom, m / denom, half_inverse_root


def _adam(theta, tangent, g, g_dot, state, state_dot, opt, step, decoupled):
    """torch.optim.Adam/AdamW's update and its derivative through m and sqrt(v).

    As in :func:`_sgd`, the tangents are updated in place.
    """
    lr, wd = opt["lr"], opt["weight_decay"]
    beta1, beta2 = opt["betas"]
    if wd and decoupled:
        theta = theta * (1 - lr * wd)
        tangent.mul_(1 - lr * wd)
    elif wd:
        g = g + wd * theta
        g_dot.add_(tangent, alpha=wd)
    if step == 1:
        state_dot["m"], state_dot["v"] = torch.zeros_like(g_dot), torch.zeros_like(g_dot)
    m, v, root2, denom, update, half_inverse_root = _adam_quantities(g, state, opt, step)
    m_dot = state_dot["m"].mul_(beta1).add_(g_dot, alpha=1 - beta1)
    v_dot = state_dot["v"].mul_(beta2).addcmul_(g_dot, g, value=2 * (1 - beta2))
    state["m"], state["v"] = m, v
    step_size = lr / (1 - beta1 ** step)
    # update' = m' / denom - update * denom' / denom with denom' = v' / (2 sqrt(v) root2)
    tangent.addcmul_(m_dot, 1 / denom, value=-step_size)
    tangent.addcmul_(v_dot, update * half_inverse_root / (root2 * denom), value=step_size)
    return theta - step_size * update, tangent


def _sgd_adjoint(theta, bar, g, state, bar_state, opt, step):
    """The transpose of :func:`_sgd`'s derivative, for reverse mode.

    ``bar`` is the cotangent of the parameters after the step, ``bar_state``
    that of the optimizer state after it (updated in place to the state
    before it); ``state`` is the primal state before the step. Returns the
    cotangent of the step's gradient and that of the parameters before the step
    (without the gradient's own dependence on them, which the caller adds as
    ``H g_bar``).
    """
    lr, wd, mu = opt["lr"], opt["weight_decay"], opt["momentum"]
    if not mu:
        d_bar = bar * -lr  # theta_new = theta - lr d
    else:
        # u = d + mu buf (nesterov) or u = buf; theta_new = theta - lr u
        buf_bar = bar_state.pop("buf", None)
        scale = -lr * mu if opt["nesterov"] else -lr
        buf_bar = bar * scale if buf_bar is None else buf_bar.add_(bar, alpha=scale)
        if step == 1:  # buf = d
            d_bar = buf_bar
        else:  # buf = mu buf_prev + (1 - dampening) d
            d_bar = buf_bar * (1 - opt["dampening"])
            bar_state["buf"] = buf_bar.mul_(mu)
        if opt["nesterov"]:
            d_bar.add_(bar, alpha=-lr)
    # d = g + wd theta
    return d_bar, bar.add_(d_bar, alpha=wd) if wd else bar


def _adam_adjoint(theta, bar, g, state, bar_state, opt, step, decoupled):
    """The transpose of :func:`_adam`'s derivative (see :func:`_sgd_adjoint`)."""
    lr, wd = opt["lr"], opt["weight_decay"]
    beta1, beta2 = opt["betas"]
    if wd and not decoupled:
        g = g + wd * theta
    _, _, root2, denom, update, half_inverse_root = _adam_quantities(g, state, opt, step)
    step_size = lr / (1 - beta1 ** step)
    # theta_new = theta1 - step_size * m / denom, denom = sqrt(v) / root2 + eps
    m_bar = bar * (-step_size / denom)
    v_bar = bar * (step_size * update * half_inverse_root / (root2 * denom))
    if "m" in bar_state:
        m_bar.add_(bar_state["m"])
        v_bar.add_(bar_state["v"])
    # m = beta1 m_prev + (1 - beta1) g1, v = beta2 v_prev + (1 - beta2) g1^2
    g_bar = torch.mul(m_bar, 1 - beta1).addcmul_(v_bar, g, value=2 * (1 - beta2))
    bar_state["m"], bar_state["v"] = m_bar.mul_(beta1), v_bar.mul_(beta2)
    if wd and decoupled:  # theta1 = theta (1 - lr wd)
        bar = bar.mul_(1 - lr * wd)
    elif wd:  # g1 = g + wd theta
        bar = bar.add_(g_bar, alpha=wd)
    return g_bar, bar
