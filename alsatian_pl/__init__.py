"""alsatian-pl: the Alsatian model search (SIGMOD 2025) as a PyTorch Lightning extension."""

__version__ = "0.1.0"
