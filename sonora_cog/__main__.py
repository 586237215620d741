"""``python -m sonora_cog``: the operator CLI (see :mod:`sonora_cog.cli`)."""

from .cli import main

raise SystemExit(main())
