"""equiv: equitune, λ-equitune and equizero around pretrained models, on every task of the paper.

Importing the package is cheap; the heavy modules (torch, datasets) load on first use.
"""

__version__ = "0.1.0"
