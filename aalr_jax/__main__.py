"""``python -m aalr_jax``: the ``aalr-jax`` command line (see :mod:`aalr_jax.cli`)."""

from aalr_jax.cli import main

raise SystemExit(main())
