"""The seed's own analysis: the scalar chain's first-weight gradient, plain vs with a skip."""

from reslab.analysis.toy_chain import (
    chain_gradient_autograd,
    chain_gradient_closed_form,
    run_toy_chain,
    sweep_depths,
)

__all__ = [
    "chain_gradient_autograd",
    "chain_gradient_closed_form",
    "run_toy_chain",
    "sweep_depths",
]
