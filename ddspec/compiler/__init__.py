"""Backend selection and the inspectable :class:`~ddspec.compiler.plan.Plan`."""
