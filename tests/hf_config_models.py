"""A transformers model built from its config (seeded random weights, no download), called with one keyword input and
returning one output field: the shape the tests that export such models share."""

from __future__ import annotations

from typing import Any

import torch


class ConfigModel(torch.nn.Module):
    """``transformers.<model>(transformers.<config>(**config))`` in eval mode, seed 0; ``forward(x)`` calls it as
    ``model(<input_name>=x)`` and returns its ``output`` field."""

    def __init__(self, model: str, config: str, input_name: str, output: str, **kwargs: Any) -> None:
        super().__init__()
        import transformers

        torch.manual_seed(0)
        self.model = getattr(transformers, model)(getattr(transformers, config)(**kwargs)).eval()
        self.input_name, self.output = input_name, output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.model(**{self.input_name: x}), self.output)
