"""The model as a function: the bottom layer of skdtda, below every other package.

A trained member (a skorch net, or a scikit-learn model as the torch function
it computes) as pure functions of its attributed parameters, and the facts of
its training that the rest of skdtda reads:

- :class:`FlatMember` and :class:`LayeredMember`: loss, outputs, measurements
  and per-row gradients of one member, over every selected parameter as one
  flat block, or over its supported layers, one block per layer
  (:func:`functional_member` builds the one a curvature needs);
- :class:`L2Penalty`, :func:`optimizer_weight_decay` and :func:`decoupled_decay`
  (AdamW's decay as a parameter-wise term): the L2 terms of the
  training objective;
- :class:`LayerTracer` and :mod:`skdtda.model.layers`: forward hooks on the
  supported layers, and the registry of layer kinds (Linear, Conv1d/2d,
  Embedding/Bag) that says how each is seen in factored form;
- :class:`TrainingRecipe`: what each member's training was (optimizer,
  effective learning rates, batch size, steps per epoch, batch order);
- :func:`plain_stack`: plain Linear/activation stacks, run by hand.

This package imports no other skdtda package (only the shared modules
:mod:`skdtda.measurements`, :mod:`skdtda.nets` and :mod:`skdtda.exceptions`).
"""

from ._member import FlatMember, FunctionalMember, LayeredMember, functional_member, measure_all
from ._penalty import L2Penalty, decoupled_decay, optimizer_weight_decay
from ._recipe import DETERMINISTIC, TrainingRecipe, batch_order, is_deterministic
from ._stack import plain_stack
from ._trace import AUTO_EXACT_COLUMNS, LayerTracer, evaluating

__all__ = ["AUTO_EXACT_COLUMNS", "DETERMINISTIC", "FlatMember", "FunctionalMember", "L2Penalty",
           "LayerTracer", "LayeredMember", "TrainingRecipe", "batch_order", "decoupled_decay",
           "evaluating", "functional_member", "is_deterministic", "measure_all",
           "optimizer_weight_decay", "plain_stack"]
