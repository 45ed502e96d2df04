"""Seed 004's model, as the notebook writes it: only the parameters get gradients, the data gets none.

    gradcheck module expressions/model.py:Model --init "in_feature=1, out_feature=3" -v x="randn(2,1)" \
        --loss "(out - label).mean()" -v label="[[0],[0]]"
"""
import torch
from torch import nn


class Model(torch.nn.Module):
    def __init__(self, in_feature=1, out_feature=3):
        super().__init__()
        self.line_layer = nn.Linear(in_features=in_feature, out_features=out_feature)

    def forward(self, x):
        x = self.line_layer(x)
        return x
