"""``python -m bcd_jax ...``: the ``bcd-jax`` command line (see ``bcd_jax.cli``)."""

from bcd_jax.cli import main

raise SystemExit(main())
