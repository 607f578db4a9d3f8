"""Gradient-leakage privacy audit (iDLG / DLG) and its reference victim, the sigmoid LeNet."""
