"""PDE problems, random-feature and MLP PINNs, collocation samplers."""
