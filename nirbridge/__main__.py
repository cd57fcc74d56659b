"""``python -m nirbridge``: the same as the ``nirbridge`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
