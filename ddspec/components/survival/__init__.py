"""Censored survival data and its analyses (data ``survival``): loaders and sources, Kaplan–Meier and IPCW, the
torch Cox partial likelihood, the discrete Bayesian network with its EM over stacked sources, imputations."""
