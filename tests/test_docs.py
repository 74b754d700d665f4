"""The code blocks of README.md and the method cards run as written."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from conftest import REPO

DOCS = ["README.md", "torchdht/performative/README.md", "torchdht/linear/README.md"]


class _Model(nn.Module):
    """Stands in for the reader's network: a body and a final linear ``fc``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(12, 32), nn.ReLU())
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        return self.fc(self.body(x))


def _python_blocks(path):
    text = (REPO / path).read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("path", DOCS)
def test_python_blocks_run(path):
    blocks = _python_blocks(path)
    assert blocks, f"{path} has no python code block"
    for block in blocks:
        torch.manual_seed(0)
        model = _Model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loader = [(torch.randn(16, 12), torch.randint(0, 5, (16,))) for _ in range(3)]
        before = model.body[0].weight.detach().clone()
        ns = {"model": model, "opt": opt, "loader": loader}
        exec(compile(block, f"{path}:python-block", "exec"), ns)
        if "PerformativeTeacher" in block:  # a training loop on the stand-in model
            assert not torch.equal(model.body[0].weight, before)  # the loop trained
            ns["teacher"].remove()  # already removed in the block: must be a no-op
