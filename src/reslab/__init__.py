"""ResLab: configuration-driven experiments on skip connections and residual networks."""

__version__ = "0.1.0"
